"""tower-megatron: the Tower+ recipe as a plugin layer on Megatron-Core."""

__version__ = "0.1.0"
