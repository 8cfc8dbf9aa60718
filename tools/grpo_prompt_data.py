"""Hand-written parts of the embedded GRPO prompt sets (``tools/build_grpo_prompts.py``): the
instruction-following task and its IFEval constraints, phrased in each prompt language.

Each constraint names an IFEval instruction id that lm-eval's checkers (the ``ifeval`` reward)
verify, the kwargs those checkers take, and the sentence that asks for it in every language. For
zh and ja the ``ifeval`` reward counts every Han/Kana character as a word, so the word limits of
those languages are character limits and are asked for as such (字 / 文字).
"""

from __future__ import annotations

# The languages of the IF set (Tower+ languages with a UDHR text in the embedded corpus).
IF_LANGUAGES = ("en", "de", "es", "fr", "pt", "ru", "zh", "ja")
SPACELESS = ("zh", "ja")

# The task every IF prompt starts with; a UDHR article in the same language follows it.
TASK = {
    "en": "Explain in your own words what the following text says.",
    "de": "Erkläre mit eigenen Worten, was der folgende Text aussagt.",
    "es": "Explica con tus propias palabras lo que dice el siguiente texto.",
    "fr": "Explique avec tes propres mots ce que dit le texte suivant.",
    "pt": "Explica por palavras tuas o que diz o texto seguinte.",
    "ru": "Объясни своими словами, о чём говорится в следующем тексте.",
    "zh": "请用你自己的话解释下面这段文字的意思。",
    "ja": "次の文章が何を述べているのか、自分の言葉で説明してください。",
}

KEYWORDS = {
    "en": ("freedom", "dignity"),
    "de": ("Freiheit", "Würde"),
    "es": ("libertad", "dignidad"),
    "fr": ("liberté", "dignité"),
    "pt": ("liberdade", "dignidade"),
    "ru": ("свобода", "достоинство"),
    "zh": ("自由", "尊严"),
    "ja": ("自由", "尊厳"),
}

# name -> (IFEval instruction id, kwargs, {lang: sentence}); sentences are formatted with the
# kwargs (and k1/k2 for the keywords). Limits for spaceless languages: see `word_limit`.
CONSTRAINTS: dict[str, tuple[str, dict, dict[str, str]]] = {
    "fewer_words": (
        "length_constraints:number_words",
        {"relation": "less than", "num_words": 60},
        {
            "en": "Answer in fewer than {num_words} words.",
            "de": "Antworte in weniger als {num_words} Wörtern.",
            "es": "Responde con menos de {num_words} palabras.",
            "fr": "Réponds en moins de {num_words} mots.",
            "pt": "Responde em menos de {num_words} palavras.",
            "ru": "Ответь, используя менее {num_words} слов.",
            "zh": "回答少于{num_words}个字。",
            "ja": "{num_words}文字未満で答えてください。",
        },
    ),
    "more_words": (
        "length_constraints:number_words",
        {"relation": "at least", "num_words": 40},
        {
            "en": "Answer in at least {num_words} words.",
            "de": "Antworte in mindestens {num_words} Wörtern.",
            "es": "Responde con al menos {num_words} palabras.",
            "fr": "Réponds en au moins {num_words} mots.",
            "pt": "Responde em pelo menos {num_words} palavras.",
            "ru": "Ответь, используя не менее {num_words} слов.",
            "zh": "回答至少{num_words}个字。",
            "ja": "{num_words}文字以上で答えてください。",
        },
    ),
    "bullets": (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 3},
        {
            "en": "Answer with exactly {num_bullets} bullet points in Markdown, such as:\n* first point\n* second point",
            "de": "Antworte mit genau {num_bullets} Aufzählungspunkten in Markdown, zum Beispiel:\n* erster Punkt\n* zweiter Punkt",
            "es": "Responde con exactamente {num_bullets} viñetas en Markdown, por ejemplo:\n* primer punto\n* segundo punto",
            "fr": "Réponds avec exactement {num_bullets} puces en Markdown, par exemple :\n* premier point\n* deuxième point",
            "pt": "Responde com exatamente {num_bullets} marcadores em Markdown, por exemplo:\n* primeiro ponto\n* segundo ponto",
            "ru": "Ответь ровно {num_bullets} пунктами списка в Markdown, например:\n* первый пункт\n* второй пункт",
            "zh": "用 Markdown 列出恰好{num_bullets}个要点，例如：\n* 第一点\n* 第二点",
            "ja": "Markdownの箇条書きでちょうど{num_bullets}項目で答えてください。例：\n* 一つ目\n* 二つ目",
        },
    ),
    "title": (
        "detectable_format:title",
        {},
        {
            "en": "Give your answer a title wrapped in double angular brackets, such as <<title>>.",
            "de": "Gib deiner Antwort einen Titel in doppelten spitzen Klammern, zum Beispiel <<Titel>>.",
            "es": "Pon a tu respuesta un título entre dobles corchetes angulares, por ejemplo <<título>>.",
            "fr": "Donne à ta réponse un titre entre doubles chevrons, par exemple <<titre>>.",
            "pt": "Dá à tua resposta um título entre parênteses angulares duplos, por exemplo <<título>>.",
            "ru": "Дай ответу заголовок в двойных угловых скобках, например <<заголовок>>.",
            "zh": "给你的回答加一个标题，用双尖括号括起来，例如 <<标题>>。",
            "ja": "回答に二重山括弧で囲んだタイトルを付けてください。例：<<タイトル>>",
        },
    ),
    "postscript": (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        {
            "en": "At the end of your answer, add a postscript starting with {postscript_marker}",
            "de": "Füge am Ende deiner Antwort ein Postskriptum hinzu, das mit {postscript_marker} beginnt.",
            "es": "Al final de tu respuesta, añade una posdata que empiece con {postscript_marker}",
            "fr": "À la fin de ta réponse, ajoute un post-scriptum commençant par {postscript_marker}",
            "pt": "No fim da tua resposta, acrescenta um pós-escrito que comece por {postscript_marker}",
            "ru": "В конце ответа добавь постскриптум, начинающийся с {postscript_marker}",
            "zh": "在回答的末尾加一段以 {postscript_marker} 开头的附言。",
            "ja": "回答の最後に {postscript_marker} で始まる追伸を付けてください。",
        },
    ),
    "no_comma": (
        "punctuation:no_comma",
        {},
        {
            "en": "Do not use any commas in your answer.",
            "de": "Verwende in deiner Antwort keine Kommas.",
            "es": "No uses ninguna coma en tu respuesta.",
            "fr": "N'utilise aucune virgule dans ta réponse.",
            "pt": "Não uses vírgulas na tua resposta.",
            "ru": "Не используй в ответе ни одной запятой.",
            "zh": "回答中不要使用任何逗号（包括，和、）。",
            "ja": "回答では読点（、）やカンマ（，,）を使わないでください。",
        },
    ),
    "keywords": (
        "keywords:existence",
        {},
        {
            "en": 'Include the words "{k1}" and "{k2}" in your answer.',
            "de": "Verwende in deiner Antwort die Wörter „{k1}“ und „{k2}“.",
            "es": "Incluye las palabras «{k1}» y «{k2}» en tu respuesta.",
            "fr": "Utilise les mots « {k1} » et « {k2} » dans ta réponse.",
            "pt": "Inclui as palavras «{k1}» e «{k2}» na tua resposta.",
            "ru": "Используй в ответе слова «{k1}» и «{k2}».",
            "zh": "回答中要包含“{k1}”和“{k2}”这两个词。",
            "ja": "回答に「{k1}」と「{k2}」という言葉を含めてください。",
        },
    ),
    "quotation": (
        "startend:quotation",
        {},
        {
            "en": 'Wrap your entire answer in double quotation marks (").',
            "de": 'Setze deine gesamte Antwort in doppelte Anführungszeichen (").',
            "es": 'Pon toda tu respuesta entre comillas dobles (").',
            "fr": 'Mets toute ta réponse entre guillemets droits doubles (").',
            "pt": 'Coloca toda a tua resposta entre aspas duplas (").',
            "ru": 'Заключи весь ответ в двойные кавычки (").',
            "zh": '把整个回答放在英文双引号（"）中。',
            "ja": '回答全体を半角の二重引用符（"）で囲んでください。',
        },
    ),
    "json": (
        "detectable_format:json_format",
        {},
        {
            "en": "Format your entire answer as JSON.",
            "de": "Gib deine gesamte Antwort im JSON-Format aus.",
            "es": "Da toda tu respuesta en formato JSON.",
            "fr": "Donne toute ta réponse au format JSON.",
            "pt": "Dá toda a tua resposta em formato JSON.",
            "ru": "Оформи весь ответ в формате JSON.",
            "zh": "整个回答请使用 JSON 格式。",
            "ja": "回答全体をJSON形式で出力してください。",
        },
    ),
}


def word_limit(kwargs: dict, lang: str) -> dict:
    """The constraint's kwargs for ``lang``: word limits doubled into character limits for the
    spaceless languages (a Chinese/Japanese word is about two characters)."""
    if lang in SPACELESS and "num_words" in kwargs:
        return {**kwargs, "num_words": 2 * kwargs["num_words"]}
    return dict(kwargs)


# The toy set: a random tiny model meets this about a third of the time (tests/alignment/test_grpo.py).
TOY_WORDS = tuple(
    [
        "apple",
        "river",
        "green",
        "house",
        "music",
        "table",
        "stone",
        "cloud",
        "bread",
        "light",
        "horse",
        "paper",
        "train",
        "water",
        "garden",
        "window",
    ]
)
