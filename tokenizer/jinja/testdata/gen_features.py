#!/usr/bin/env python3
"""Renders feature templates (written for this test, covering what chat
templates use) with Jinja2 configured as transformers; writes
features.json for features_test.go.

Run from tokenizer/jinja/testdata: python3 gen_features.py > features.json
"""
import json
import sys

from transformers_env import make_env

env = make_env()

T = {}
T["whitespace"] = "a\n  {% if true %}\n    b\n  {% endif %}\nc {{ 'x' }}\n{# note #}\n  {#- c -#}  d\n{%+ if true %} e{% endif +%}\nf\n\t{% for i in [1] %}{{ i }}{% endfor %}\n"
T["whitespace_dash"] = "A  {{- ' b ' -}}  C\n{%- if true -%}\n  D  \n{%- endif -%}\n  E {{ 1 }}\n\n{{- 2 }}"
T["loops"] = ("{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}"
              "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}{{ loop.revindex0 }},"
              "{{ loop.cycle('o', 'e') }}{% if not loop.last %} {% endif %}{% endfor %}|"
              "{% for x in [] %}x{% else %}empty{% endfor %}|"
              "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}{% endif %}{{ i }}{% endfor %}|"
              "{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }};{% endfor %}|"
              "{% for x in messages if x.role == 'user' %}{{ loop.index }}{{ x.content }}{% endfor %}|"
              "{% for a in [1,2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }}{% endfor %}{% endfor %}")
T["scoping"] = ("{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}|"
                "{% if true %}{% set y = 5 %}{% endif %}{{ y }}|"
                "{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }}{{ ns.s }}|"
                "{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set blk %}in {{ x }}{% endset %}[{{ blk }}]")
T["macros"] = ("{% macro greet(name, punct='!') -%}Hi {{ name }}{{ punct }}{%- endmacro %}"
               "{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C') }} {{ greet('D', punct='.') }}|"
               "{% macro outer(x) %}[{{ x }}{{ caller() if caller is defined else '' }}]{% endmacro %}{{ outer(1) }}")
T["exprs"] = ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} "
              "{{ 1.5 + 1 }} {{ 3 / 3 }} {{ 'a' ~ 1 ~ none }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 >= 2 }} "
              "{{ 'b' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }} {{ not true or false and true }} "
              "{{ 'y' if 1 else 'n' }} {{ 'y' if 0 else 'n' }} [{{ 'y' if 0 }}] {{ none }} {{ true }} {{ [1, 'a', none, true, 1.0] }} "
              "{{ {'a': 'x', 'b': [1]} }} {{ 1 == 1.0 }} {{ 'a' == 'a' }} {{ [1,2] == [1,2] }} {{ -3 }} {{ - 2.5 }}")
T["strings"] = ("{{ '  pad  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ ' a b  c '.split() }}|{{ 'a,b,,c'.split(',') }}|"
                "{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'hello world'.title() }}|"
                "{{ 'hello'.capitalize() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXbX'.replace('X', '-') }}|"
                "{{ 'abc'[1] }}{{ 'abc'[-1] }}{{ 'abcdef'[1:4] }}{{ 'abcdef'[::2] }}{{ 'abc'[::-1] }}|{{ 'a\\nb'.splitlines() }}|"
                "{{ '\\n\\nx\\n'.lstrip('\\n') }}|{{ 'x'.rstrip() }}|{{ 'ab'.find('b') }}{{ 'ab'.find('z') }}|{{ '-'.join(['a', 'b']) }}|"
                "{{ \"it's\" }}|{{ 'say \"hi\"' }}|{{ 'tab\\there' }}|{{ '多语言'[1:] }}|{{ 'aaa'.count('a') }}")
T["lists"] = ("{{ [3,1,2][::-1] }} {{ [1,2,3,4][1:] }} {{ [1,2,3][:-1] }} {{ [1,2,3][-2:] }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3][5:] }} "
              "{{ messages[-1].content }} {{ messages[0]['role'] }} {{ (messages | length) - 1 }} {{ [1,2,3].index(2) }}")
T["filters"] = ("{{ messages | map(attribute='role') | join(', ') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|"
                "{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='content') | list }}|{{ [3,1,2] | sort }}|{{ [3,1,2] | sort(reverse=true) }}|"
                "{{ messages | sort(attribute='role') | map(attribute='role') | list }}|{{ [1,2,3] | first }}{{ [1,2,3] | last }}|{{ 'abc' | length }}|"
                "{{ '  t  ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ undefined_var | default('dflt') }}|{{ '' | default('e', true) }}|"
                "{{ none | default('n') }}|{{ [1,2] | join }}|{{ 'a b' | replace(' ', '_') }}|{{ [1, 2, 2, 3] | unique | list }}|"
                "{{ 3.7 | int }}{{ '42' | int }}{{ 'x' | int }}{{ 2 | float }}|{{ -3 | abs }}|{{ 2.567 | round(2) }}|{{ [1,2] | reverse | list }}|"
                "{{ 'abc' | reverse }}|{{ {'b': 1, 'a': 2} | dictsort }}|{{ {'x': 1} | items | list }}|{{ [1, 0, 2] | select | list }}|"
                "{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ [1,2,3] | sum }}|{{ [4,2,8] | min }}{{ [4,2,8] | max }}|"
                "{{ 'hello world foo' | wordcount }}|{{ 'x' | string }}{{ 1 | string }}|{{ {'a': 1} | tojson }}|{{ 'a&b' | e }}|{{ 'x' | safe }}")
T["tojson"] = ("{{ messages | tojson }}\n{{ messages[0] | tojson(indent=2) }}\n{{ {'k': [1, 2.5, none, true, 'é\"\\\\\\n\\t\\u0001']} | tojson }}\n"
               "{{ {'b': 1, 'a': {'d': [], 'c': {}}} | tojson(indent=4) }}\n{{ [] | tojson }}{{ {} | tojson }}{{ 'x' | tojson }}{{ 1.0 | tojson }}{{ 1e20 | tojson }}")
T["tests"] = ("{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.5 is float }}"
              "{{ {} is mapping }}{{ [] is sequence }}{{ [] is iterable }}{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}"
              "{{ 'ab' is lower }}{{ 'AB' is upper }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 'a' is in 'abc' }}{{ true is true }}{{ 0 is false }}"
              "{{ messages is not string }}{{ not x is defined }}{{ x is not none }}")
T["undefined"] = "[{{ nope }}][{{ nope.attr if nope is defined else 'u' }}][{% if nope %}t{% else %}f{% endif %}][{{ messages[0].missing is defined }}][{{ messages[0]['missing'] is none }}]"
T["raw"] = "{% raw %}{{ not rendered }} {% if %}{% endraw %}|{%- raw -%}  x  {%- endraw -%}  |"
T["chatlike"] = ("{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] | trim %}\n"
                 "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = '' %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n"
                 "{{- bos_token }}\n{%- if system_message %}\n<<SYS>>\n{{ system_message }}\n<</SYS>>\n\n{% endif %}\n"
                 "{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
                 "        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n"
                 "    {%- if message['role'] == 'user' %}\n        {{- '[INST] ' + message['content'] | trim + ' [/INST]' }}\n"
                 "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] | trim + ' ' + eos_token }}\n    {%- endif %}\n{%- endfor %}\n")
T["llama3_style"] = ("{{- bos_token }}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n"
                     "    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n"
                     "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n{%- if builtin_tools is defined %}\n"
                     "    {{- 'Tools: ' + builtin_tools | reject('equalto', 'code_interpreter') | join(', ') + '\\n\\n' }}\n{%- endif %}\n"
                     "{{- system_message }}{{- '<|eot_id|>' }}\n{%- for message in messages %}\n"
                     "    {%- if message.tool_calls is defined and message.tool_calls %}\n        {%- set tool_call = message.tool_calls[0].function %}\n"
                     "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
                     "        {{- '<|python_tag|>' + tool_call.name + '.call(' }}\n        {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
                     "            {{- arg_name + '=\"' + arg_val|string + '\"' }}\n            {%- if not loop.last %}\n                {{- ', ' }}\n            {%- endif %}\n"
                     "        {%- endfor %}\n        {{- ')<|eom_id|>' }}\n"
                     "    {%- elif message.content is string %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
                     "    {%- else %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
                     "        {%- for part in message.content | selectattr('type', 'equalto', 'text') %}{{ part.text }}{% if not loop.last %} {% endif %}{% endfor %}\n"
                     "        {{- '<|eot_id|>' }}\n    {%- endif %}\n{%- endfor %}\n"
                     "{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n")
T["misc"] = ("{{ '%s has %d items' | format('list', 3) }}|{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='role') | first }}|"
             "{{ messages[0].get('role') }}{{ messages[0].get('nope', 'dflt') }}|{% set ns = namespace(found=false) %}"
             "{% for m in messages %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}|"
             "{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined else '-' }}>{% endfor %}|"
             "{{ ['a ', ' b'] | map('trim') | join }}|{{ 'abc' | first }}{{ 'abc' | last }}|{{ 'x' in ['x', 'y'] }}|{{ {'a': 1, 'b': 2} | length }}|"
             "{{ (1, 2) }}{{ (1,) }}{{ () }}|{{ [1, [2, (3, 4)]] }}|{{ 10 > 9.5 }}|{{ 'abc' < 'abd' }}|{{ 1 if none is none }}|"
             "{{ messages | map(attribute='role') | unique | list | length }}|{{ [3, 1] | max }}|{{ '' or 'fallback' }}|{{ 0 and 1 }}|{{ [] or none }}")
T["formatting"] = ("{{ '%s=%d' % ('n', 3) }}|{{ '%s' % 'one' }}|{{ '100%%' % () }}|{{ '%r' % 'q' }}|{{ '{} and {}'.format('a', 1) }}|"
                   "{{ '{1}{0}'.format('x', 'y') }}|{{ '{name}!'.format(name='hi') }}|{{ '{{lit}}'.format() }}|"
                   "{{ messages | tojson(separators=(',', ':')) }}|{{ {'é': 'ü€😀\x7f'} | tojson(ensure_ascii=true) }}|"
                   "{{ {'b': 1, 'a': [1, 2]} | tojson(indent=0) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}")
T["generation"] = "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% endif %}{% endfor %}"

convs = [
    [{"content": "sys prompt  ", "role": "system"}, {"content": " hi ", "role": "user"},
     {"content": "hello", "role": "assistant"}, {"content": "bye", "role": "user"}],
    [{"content": "only", "role": "user"}],
    [{"content": [{"text": "look", "type": "text"}, {"type": "image", "url": "x.png"}, {"text": "here", "type": "text"}], "role": "user"},
     {"content": None, "role": "assistant", "tool_calls": [{"function": {"arguments": {"city": "Paris", "days": 3}, "name": "weather"}, "type": "function"}]},
     {"content": "sunny", "role": "tool"}],
]
convs = json.loads(json.dumps(convs, sort_keys=True))

out = []
for name, src in T.items():
    if name == "generation":
        continue  # jinja2 needs transformers' AssistantTracker extension for this tag
    tmpl = env.from_string(src)
    for ci, conv in enumerate(convs):
        ctx = {"messages": conv, "bos_token": "<s>", "eos_token": "</s>", "x": 1, "add_generation_prompt": True,
               "builtin_tools": ["brave_search", "code_interpreter", "wolfram"]}
        try:
            text, err = tmpl.render(**ctx), None
        except Exception as e:  # noqa: BLE001
            text, err = None, "%s: %s" % (type(e).__name__, e)
        out.append({"name": name, "template": src, "conv": ci, "text": text, "error": err})
json.dump({"conversations": convs, "cases": out}, sys.stdout, ensure_ascii=False, indent=0, sort_keys=True)
sys.stdout.write("\n")
