#!/usr/bin/env python3
"""Writes tests/data/chat_templates/goldens.jsonl: every template in tests/data/chat_templates/*.jinja rendered
the way Hugging Face transformers' apply_chat_template renders it (same Jinja environment, filters and globals,
same render variables), over a fixed set of conversations. These are the expected outputs for fp4lab's C++
chat-template interpreter.

Needs only the standard library and jinja2 (the goldens were made with jinja2 3.1.6). Run from anywhere:
    python3 scripts/gen_chat_goldens.py
It prints, per template, how many renders succeeded and how many raised.

One JSON object per line (UTF-8, ensure_ascii=False), sorted by template then case:
    template, case, messages, add_generation_prompt, bos_token, eos_token,
    extra          every further render variable (always tools=null and documents=null, which
                   apply_chat_template passes when called without tools/documents, plus the case's own kwargs),
    strftime_now   the fixed date strftime_now() formats ("2026-07-26"), so that goldens are reproducible,
    output         the rendered string, or, when rendering raised:
    error          str(exception) (for raise_exception(msg): msg itself) and error_type (the exception class).
Render with: messages, add_generation_prompt, bos_token, eos_token and **extra.
"""
import datetime
import json
import pathlib
import sys

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "tests" / "data" / "chat_templates"
OUT = TEMPLATE_DIR / "goldens.jsonl"

FIXED_DATE = datetime.datetime(2026, 7, 26)

# bos_token / eos_token per template (the model's special_tokens_map; only Llama 3.x, Gemma and Mistral use
# bos_token, only Phi-3.5 and Mistral use eos_token). Qwen's bos is null in HF; "" is passed (unused).
# Nemotron-Nano-v2 uses neither; "<s>"/"</s>" are placeholders (its turn end is <SPECIAL_12>).
SPECIAL_TOKENS = {
    "meta-llama-Llama-3.3-70B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen-Qwen3-0.6B.jinja": ("", "<|im_end|>"),
    "Qwen-QwQ-32B.jinja": ("", "<|im_end|>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("<s>", "</s>"),
    "NVIDIA-Nemotron-Nano-v2.jinja": ("<s>", "</s>"),
    "google-gemma-2-2b-it.jinja": ("<bos>", "<eos>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "ibm-granite-granite-3.3-2B-Instruct.jinja": ("<|end_of_text|>", "<|end_of_text|>"),
}
THINKING_TEMPLATES = {"Qwen-Qwen3-0.6B.jinja", "Qwen-QwQ-32B.jinja"}


def make_env():
    # As transformers.utils.chat_template_utils._compile_jinja_template (minus AssistantTracker, which only adds
    # the {% generation %} tag, unused by these templates), with strftime_now pinned to FIXED_DATE.
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_DATE.strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def msg(role, content):
    return {"role": role, "content": content}


SYSTEM = msg("system", "You are a helpful assistant.")
CONV_A = [msg("user", "Hello!")]
CONV_B = [SYSTEM, msg("user", "What is 2+2?")]
CONV_C = [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"),
          msg("user", 'Tell me a joke about "quotes" & <tags>.')]
CONV_D = [msg("user", "  Grüße, 世界 — ünïcödé 🙂\nsecond line\t tab  ")]
CONV_E = [SYSTEM, msg("user", "What is the capital of France?"), msg("assistant", "Paris."),
          msg("user", "And of Italy?"), msg("assistant", "Rome.")]
THINK = "<think>\nreasoning\n</think>\n\nanswer"
CONV_F_HISTORY = [msg("user", "What is 2+2?"), msg("assistant", THINK), msg("user", "And 3+3?")]
CONV_F_LAST = [msg("user", "What is 2+2?"), msg("assistant", THINK)]
CONV_G_ASSISTANT_FIRST = [msg("assistant", "Hello, I am the assistant."), msg("user", "Hi")]
CONV_G_ENDS_ASSISTANT = [msg("user", "Hi"), msg("assistant", "Hello! How can I help?")]


def cases(template_name):
    """(case id, messages, add_generation_prompt, per-case kwargs)"""
    out = []

    def both(cid, messages, extra=None):
        out.append((cid + "/gen", messages, True, extra or {}))
        out.append((cid + "/nogen", messages, False, extra or {}))

    both("a", CONV_A)
    both("b", CONV_B)
    both("c", CONV_C)
    both("d", CONV_D)
    out.append(("e/nogen", CONV_E, False, {}))
    if template_name in THINKING_TEMPLATES:
        both("f/no-thinking", CONV_C, {"enable_thinking": False})
        both("f/think-in-history", CONV_F_HISTORY)
        both("f/think-last", CONV_F_LAST)
    both("g/assistant-first", CONV_G_ASSISTANT_FIRST)
    out.append(("g/ends-assistant/gen", CONV_G_ENDS_ASSISTANT, True, {}))
    return out


def main():
    env = make_env()
    names = sorted(p.name for p in TEMPLATE_DIR.glob("*.jinja"))
    missing = [n for n in names if n not in SPECIAL_TOKENS]
    if missing:
        sys.exit(f"no bos/eos tokens configured for: {', '.join(missing)}")
    rows = []
    summary = {}
    for name in names:
        # Bytes, decoded: line endings stay exactly as in the file (the templates are LF-only).
        source = (TEMPLATE_DIR / name).read_bytes().decode("utf-8")
        template = env.from_string(source)
        bos, eos = SPECIAL_TOKENS[name]
        ok = raised = 0
        for cid, messages, gen, kwargs in cases(name):
            extra = {"tools": None, "documents": None, **kwargs}
            row = {"template": name, "case": cid, "messages": messages, "add_generation_prompt": gen,
                   "bos_token": bos, "eos_token": eos, "extra": extra,
                   "strftime_now": FIXED_DATE.strftime("%Y-%m-%d")}
            try:
                # Fresh copies: the render must not be able to alter the recorded inputs.
                row["output"] = template.render(messages=json.loads(json.dumps(messages)),
                                                add_generation_prompt=gen, bos_token=bos, eos_token=eos,
                                                **json.loads(json.dumps(extra)))
                ok += 1
            except Exception as e:  # noqa: BLE001 -- every failure is part of the golden
                row["error"] = str(e)
                row["error_type"] = type(e).__name__
                raised += 1
            rows.append(row)
        summary[name] = (ok, raised)
    rows.sort(key=lambda r: (r["template"], r["case"]))
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT.relative_to(ROOT)} (jinja2 {jinja2.__version__})")
    for name in names:
        ok, raised = summary[name]
        print(f"  {name}: {ok} rendered, {raised} raised")


if __name__ == "__main__":
    main()
