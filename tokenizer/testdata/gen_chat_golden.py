#!/usr/bin/env python3
"""Renders chat templates with Jinja2 configured as transformers does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
non-escaping tojson) over conversations with tools, tool calls, reasoning and
thinking flags; writes chat-golden.json for chat_golden_test.go.

Run from tokenizer/testdata: python3 gen_chat_golden.py > chat-golden.json
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jinja", "testdata"))
from transformers_env import make_env  # noqa: E402

env = make_env()
env.filters["from_json"] = json.loads

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

templates = {}
for name in ["deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
             "deepseek-ai-DeepSeek-V3.1", "deepseek-ai-DeepSeek-V3.2", "llama-cpp-deepseek-r1"]:
    templates[name] = open("../../testdata/chat-templates/%s.jinja" % name).read()
templates["deepseek-v3-config"] = json.load(open("../../testdata/tokenizers/deepseek-v3/tokenizer_config.json"))["chat_template"]
templates["qwen2-config"] = json.load(open("../../testdata/tokenizers/qwen2-r1-distill/tokenizer_config.json"))["chat_template"]

call = {"type": "function", "function": {"arguments": "{\"city\": \"Paris\", \"days\": 3}", "name": "get_weather"}}
call_obj = {"type": "function", "function": {"arguments": {"city": "Paris", "days": 3, "units": None}, "name": "get_weather"}}
tools = [{"type": "function", "function": {"description": "Weather \"now\" <b>", "name": "get_weather",
          "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}}]

convs = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "S1"}, {"role": "system", "content": "S2"}, {"role": "user", "content": "Q"}],
    [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nBecause."},
     {"role": "user", "content": "Thanks"}],
    [{"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": None, "tool_calls": [call, call]},
     {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "rainy"},
     {"role": "assistant", "content": "Sunny then rain."}, {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": "", "tool_calls": [call_obj]},
     {"role": "tool", "content": "sunny"}],
    [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"},
     {"role": "user", "content": "<tool_response>x</tool_response>"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "多语言 ünïcödé \"quotes\" \\ back"}],
]
varsets = [{}, {"enable_thinking": False}, {"enable_thinking": True}, {"thinking": True}, {"tools": tools}]

# Render from the sorted-key JSON that the Go test reads (Go maps are unordered).
convs = json.loads(json.dumps(convs, sort_keys=True))
varsets = json.loads(json.dumps(varsets, sort_keys=True))
out = []
for tname, src in templates.items():
    tmpl = env.from_string(src)
    for ci, conv in enumerate(convs):
        for agp in (True, False):
            for vs in varsets:
                ctx = {"messages": conv, "add_generation_prompt": agp, "bos_token": BOS, "eos_token": EOS,
                       "tools": None, "documents": None}
                ctx.update(vs)
                try:
                    text = tmpl.render(**ctx)
                    err = None
                except Exception as e:  # noqa: BLE001
                    text, err = None, "%s: %s" % (type(e).__name__, e)
                out.append({"template": tname, "conv": ci, "add_generation_prompt": agp, "vars": vs,
                            "text": text, "error": err})
json.dump({"conversations": convs, "cases": out}, sys.stdout, ensure_ascii=False, indent=0, sort_keys=True)
sys.stdout.write("\n")
