"""Test-set readers: WMT24++'s released JSONL as is, generic JSONL and TSV; malformed sets stop
``tower-megatron eval`` with exit code 2 and one ``file:line: field`` line, before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tower_megatron.cli import main
from tower_megatron.config.loader import ConfigError
from tower_megatron.eval.testsets import read_chat, read_ifeval, read_ifmt, read_translation

WMT = {
    "lp": "en-pt_BR",
    "domain": "news",
    "document_id": "doc-7",
    "segment_id": 3,
    "is_bad_source": False,
    "source": "Hello world!",
    "target": "Olá mundo!",
    "original_target": "Olá, mundo!",
}


def _jsonl(path, rows) -> str:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return str(path)


def test_wmt24pp_format_read_as_is(tmp_path):
    bad = dict(WMT, segment_id=4, is_bad_source=True, source="<broken>")
    path = _jsonl(tmp_path / "en-pt_BR.jsonl", [WMT, bad])
    (ex,) = read_translation(path)
    assert (ex.src_lang, ex.tgt_lang, ex.source, ex.reference) == (
        "en",
        "pt-BR",
        "Hello world!",
        "Olá mundo!",
    )
    assert ex.id == "doc-7#3" and ex.origin == f"{path}:1"
    assert len(read_translation(path, skip_bad_source=False)) == 2


def test_generic_jsonl_and_tsv(tmp_path):
    generic = _jsonl(
        tmp_path / "g.jsonl", [{"src_lang": "de", "tgt_lang": "en", "source": "Hallo", "reference": "Hello"}]
    )
    assert read_translation(generic)[0].pair == "de-en"
    tsv = tmp_path / "t.tsv"
    tsv.write_text("en-zh_CN\tGood morning\t早上好\n\nen-ja\tThanks\tありがとう\n", encoding="utf-8")
    got = read_translation(str(tsv))
    assert [(e.pair, e.origin.rsplit(":", 1)[1]) for e in got] == [("en-zh-CN", "1"), ("en-ja", "3")]


def test_embedded_sets_read():
    assert len(read_translation("resource:eval/translation_demo.jsonl")) == 32
    assert len(read_ifeval("resource:eval/ifeval_demo.jsonl")) == 20
    assert len(read_ifmt("resource:eval/ifmt_demo.jsonl")) >= 40
    assert len(read_chat("resource:eval/chat_demo.jsonl")) == 12


MALFORMED = {
    "missing reference": (
        [WMT, {k: v for k, v in WMT.items() if k != "target"}],
        2,
        "field 'reference': missing",
    ),
    "unknown pair": ([dict(WMT, lp="english-klingonish")], 1, "field 'lp': unknown language code"),
    "bad pair shape": ([dict(WMT, lp="en")], 1, "field 'lp': unknown language pair 'en'"),
    "empty source": ([WMT, WMT, dict(WMT, source="  ")], 3, "field 'source': is empty"),
    "wrong type": ([dict(WMT, target=["Olá"])], 1, "field 'target': expected a string, got list"),
    "not an object": ([WMT, '["a", "b"]'], 2, "expected a JSON object, got list"),
    "invalid json": (['{"lp": "en-de", '], 1, "invalid JSON"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_translation_sets(tmp_path, case):
    rows, line, message = MALFORMED[case]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError) as err:
        read_translation(path)
    assert str(err.value).startswith(f"{path}:{line}:") and message in str(err.value)


def test_malformed_ifeval_and_ifmt(tmp_path):
    ok = {"key": 1, "prompt": "Hi", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path = _jsonl(tmp_path / "if.jsonl", [ok, dict(ok, kwargs=[{}, {}])])
    with pytest.raises(ConfigError, match=rf"^{path}:2: field 'kwargs': has 2 entries for 1 instructions"):
        read_ifeval(path)
    path = _jsonl(tmp_path / "if2.jsonl", [dict(ok, instruction_id_list=["no:such"])])
    with pytest.raises(
        ConfigError, match=rf"^{path}:1: field 'instruction_id_list': unknown instruction 'no:such'"
    ):
        read_ifeval(path, known_instructions={"punctuation:no_comma"})
    item = {
        "src_lang": "en",
        "tgt_lang": "de",
        "source": "a",
        "reference": "b",
        "prompt": "p",
        "constraints": [{"type": "rhyme"}],
    }
    path = _jsonl(tmp_path / "ifmt.jsonl", [item])
    with pytest.raises(
        ConfigError, match=rf"^{path}:1: field 'constraints': unknown constraint type 'rhyme'"
    ):
        read_ifmt(path, known_constraints={"glossary"})


def test_eval_cli_exits_2_on_malformed_set(tmp_path, capsys):
    bad = _jsonl(tmp_path / "bad.jsonl", [WMT, {k: v for k, v in WMT.items() if k != "target"}])
    config = tmp_path / "eval.yaml"
    config.write_text(f"checkpoint:\n  path: {tmp_path}/no-model\ntranslation:\n  files: [{bad}]\n")
    assert main(["eval", str(config), f"output_dir={tmp_path}/out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tower-megatron eval: config error: {bad}:2: field 'reference': missing (also looked for target, tgt, ref)"
    ]
    assert not (tmp_path / "out").exists()  # nothing written


def test_eval_cli_subprocess_exit_code(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("en-de\tHello\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tower_megatron",
            "eval",
            "configs/eval/demo_cpu.yaml",
            "checkpoint.path=/nonexistent",
            f"translation.files=[{bad}]",
            "ifeval.files=[]",
            "ifmt.files=[]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert f"{bad}:1: field 'reference': expected 3 tab-separated columns" in result.stderr


def test_ifeval_kwargs_checked_against_lm_eval(tmp_path):
    from tower_megatron.eval.config import IFEvalSuite
    from tower_megatron.eval.suites import SUITES

    item = {
        "key": 1,
        "prompt": "Hi",
        "instruction_id_list": ["language:response_language"],
        "kwargs": [{"language": "tlh"}],
    }
    path = _jsonl(tmp_path / "lang.jsonl", [item])
    with pytest.raises(ConfigError, match=rf"^{path}:1: field 'kwargs': KeyError"):
        SUITES.get("ifeval").read(IFEvalSuite(files=[path]))


def test_shipped_eval_configs_load():
    from tower_megatron.config import load_config
    from tower_megatron.eval.config import EvalConfig, ReportConfig, ServeConfig

    for name in ("demo_cpu", "wmt24pp"):
        cfg = load_config(EvalConfig, f"configs/eval/{name}.yaml", ["checkpoint.path=x"])
        assert cfg.generation.temperature == 0.0
    assert load_config(ServeConfig, "configs/eval/serve.yaml").host == "127.0.0.1"
    assert load_config(ReportConfig, "configs/eval/report.yaml", ["inputs=[a,b]"]).inputs == ["a", "b"]
    with pytest.raises(ConfigError, match="Did you mean 'generation.max_new_tokens'"):
        load_config(EvalConfig, "configs/eval/demo_cpu.yaml", ["generation.max_new_token=5"])


def test_embedded_sets_are_what_the_tool_builds(tmp_path):
    """The committed JSONL files are exactly tools/build_eval_sets.py's (deterministic) output."""
    from tower_megatron.resources import resource_path

    subprocess.run(
        [sys.executable, "tools/build_eval_sets.py", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("translation_demo", "ifmt_demo", "ifeval_demo", "chat_demo"):
        built = (tmp_path / f"{name}.jsonl").read_bytes()
        assert built == resource_path(f"eval/{name}.jsonl").read_bytes(), name
