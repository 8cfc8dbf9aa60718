"""Data: tokenizers, preprocessing to Megatron IndexedDataset files, mixtures, dataset builders."""
