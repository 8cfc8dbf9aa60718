"""Hand-written data for ``tools/build_eval_sets.py``: IFEval-format prompts in 8 languages
(instruction ids and kwargs as in lm-eval's IFEval) and formal-address word lists for IF-MT."""

from __future__ import annotations


def _p(key: int, lang: str, prompt: str, *instructions: tuple[str, dict]) -> dict:
    return {
        "key": key,
        "lang": lang,
        "prompt": prompt,
        "instruction_id_list": [i for i, _ in instructions],
        "kwargs": [k for _, k in instructions],
    }


IFEVAL_PROMPTS = [
    _p(
        1001,
        "en",
        "Write a short note inviting your neighbours to a street party. Do not use any commas.",
        ("punctuation:no_comma", {}),
    ),
    _p(
        1002,
        "en",
        "List three benefits of learning a second language. Use exactly 3 markdown bullet points "
        "such as:\n* This is a point.",
        ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ),
    _p(
        1003,
        "en",
        "Describe a lighthouse in fewer than 40 words, entirely in lowercase letters.",
        ("length_constraints:number_words", {"relation": "less than", "num_words": 40}),
        ("change_case:english_lowercase", {}),
    ),
    _p(
        1004,
        "en",
        "Give a title to a poem about rivers, wrapped in double angular brackets like <<title>>, "
        "then write the poem.",
        ("detectable_format:title", {}),
    ),
    _p(
        1005,
        "de",
        "Schreibe eine kurze E-Mail an einen Kollegen über ein verschobenes Meeting. Füge am Ende "
        "ein Postskriptum hinzu, das mit P.S. beginnt.",
        ("detectable_content:postscript", {"postscript_marker": "P.S."}),
        ("language:response_language", {"language": "de"}),
    ),
    _p(
        1006,
        "de",
        "Erkläre in mindestens 3 Sätzen, warum Bäume wichtig sind. Verwende das Wort 'Sauerstoff'.",
        ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3}),
        ("keywords:existence", {"keywords": ["Sauerstoff"]}),
    ),
    _p(
        1007,
        "fr",
        "Décris ta ville préférée. Ta réponse entière doit être entre guillemets doubles.",
        ("startend:quotation", {}),
        ("language:response_language", {"language": "fr"}),
    ),
    _p(
        1008,
        "fr",
        "Donne deux conseils pour bien dormir. Termine ta réponse exactement par la phrase "
        "'Bonne nuit.' sans rien ajouter après.",
        ("startend:end_checker", {"end_phrase": "Bonne nuit."}),
    ),
    _p(
        1009,
        "es",
        "Escribe una receta corta de gazpacho. Resalta al menos 2 secciones con markdown, por "
        "ejemplo *sección resaltada*.",
        ("detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ),
    _p(
        1010,
        "es",
        "Describe el mar sin usar las palabras 'agua' ni 'azul'.",
        ("keywords:forbidden_words", {"forbidden_words": ["agua", "azul"]}),
    ),
    _p(
        1011,
        "pt",
        "Escreve uma carta curta a um amigo. Inclui pelo menos 2 marcadores entre parênteses "
        "retos, como [nome].",
        ("detectable_content:number_placeholders", {"num_placeholders": 2}),
    ),
    _p(
        1012,
        "pt",
        "Responde em formato JSON: indica o nome de três frutas portuguesas e a sua cor.",
        ("detectable_format:json_format", {}),
    ),
    _p(
        1013,
        "ru",
        "Напиши короткое стихотворение о зиме. Используй слово 'снег' не менее двух раз.",
        ("keywords:frequency", {"keyword": "снег", "frequency": 2, "relation": "at least"}),
    ),
    _p(
        1014,
        "ru",
        "Опиши свой идеальный выходной день. Раздели ответ на 2 абзаца, разделённых символами ***.",
        ("length_constraints:number_paragraphs", {"num_paragraphs": 2}),
    ),
    _p(
        1015,
        "zh",
        "请写一段关于春天的短文，并在回答中使用“花”这个字。整个回答请用英文双引号括起来。",
        ("keywords:existence", {"keywords": ["花"]}),
        ("startend:quotation", {}),
    ),
    _p(
        1016,
        "zh",
        "用两种不同的方式介绍北京。两个回答之间用六个星号分隔：******",
        ("combination:two_responses", {}),
    ),
    _p(
        1017,
        "ja",
        "日本の四季について説明してください。回答をJSON形式で出力してください。",
        ("detectable_format:json_format", {}),
    ),
    _p(
        1018,
        "ja",
        "好きな食べ物について書いてください。回答は「以上です。」で終えてください。",
        ("startend:end_checker", {"end_phrase": "以上です。"}),
    ),
    _p(
        1019,
        "en",
        "Write a product description for a reusable bottle with 2 sections. Mark the beginning of "
        "each section with SECTION X.",
        ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}),
    ),
    _p(
        1020,
        "en",
        "First repeat the request word for word without change, then give your answer: What is "
        "the capital of Portugal?",
        ("combination:repeat_prompt", {"prompt_to_repeat": "What is the capital of Portugal?"}),
    ),
]

# Formal address per language for IF-MT: (formal words, exact case; informal words, any case;
# the instruction shown to the model).
FORMAL = {
    "de": (
        ["Sie", "Ihr", "Ihre", "Ihren", "Ihrem", "Ihrer", "Ihres", "Ihnen"],
        ["du", "dich", "dir", "dein", "deine", "deinen", "deinem", "deiner"],
        "Address the reader formally (with 'Sie', never 'du').",
    ),
    "fr": (
        ["vous", "Vous", "votre", "Votre", "vos", "Vos"],
        ["tu", "toi", "ton", "ta", "tes", "te"],
        "Address the reader formally (with 'vous', never 'tu').",
    ),
    "es": (
        ["usted", "Usted", "ustedes", "Ustedes", "su", "Su", "sus", "Sus"],
        ["tú", "tu", "te", "ti", "tus", "vosotros"],
        "Address the reader formally (with 'usted', never 'tú').",
    ),
    "pt": (
        ["senhor", "senhora", "seu", "sua", "seus", "suas", "Seu", "Sua"],
        ["tu", "te", "ti", "teu", "tua", "teus", "tuas"],
        "Address the reader formally (never with 'tu').",
    ),
}
