"""Chat templates for the template-analysis tests: real-model styles (clean) and SSTI payloads.

The payloads are benign: the most they would do if some renderer executed them is create the file
named by ``CANARY`` (the tests substitute a path under tmp_path; the scanner never renders).
"""

from __future__ import annotations

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

LLAMA31_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
            + message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

CHATML_QWEN = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n<tool_call>\\n{\\"name\\": <function-name>, "
        "\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

DEEPSEEK_R1 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='', is_first_sp=true) %}{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}"
    "{% set ns.is_first_sp = false %}{%- else %}"
    "{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}"
    "{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<\uff5cUser\uff5c>' + message['content']}}"
    "{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<\uff5cAssistant\uff5c>' + content + '<\uff5cend\u2581of\u2581sentence\uff5c>'}}"
    "{%- endif %}{%- endfor -%}{# a comment with __class__ in it is not code #}"
    "{% if add_generation_prompt %}{{'<\uff5cAssistant\uff5c><think>\\n'}}{% endif %}"
    "{% raw %}{{ literal text, never parsed: __globals__ }}{% endraw %}"
)

CLEAN = {
    "llama3": LLAMA3,
    "llama31-tools": LLAMA31_TOOLS,
    "chatml-qwen": CHATML_QWEN,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "deepseek-r1": DEEPSEEK_R1,
}

_CMD = "touch CANARY"
#: technique name -> (template, expected rule id)
MALICIOUS: dict[str, tuple[str, str]] = {
    "cve-2024-34359-self-init-globals": (
        "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('"
        + _CMD
        + "').read() }}",
        "TWS-TPL-001",
    ),
    "lipsum-globals-os": (
        "{{ lipsum.__globals__['os'].popen('" + _CMD + "').read() }}",
        "TWS-TPL-001",
    ),
    "cycler-init-globals": (
        "{{ cycler.__init__.__globals__.os.popen('" + _CMD + "').read() }}",
        "TWS-TPL-001",
    ),
    "joiner-init-globals": (
        "{{ joiner.__init__.__globals__.os.system('" + _CMD + "') }}",
        "TWS-TPL-001",
    ),
    "namespace-init-globals": (
        "{{ namespace.__init__.__globals__.os.popen('" + _CMD + "').read() }}",
        "TWS-TPL-001",
    ),
    "mro-subclasses-walk": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == 'Popen' %}{{ c('" + _CMD + "', shell=True) }}{% endif %}{% endfor %}",
        "TWS-TPL-001",
    ),
    "template-reference-context": (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('"
        + _CMD
        + "') }}",
        "TWS-TPL-001",
    ),
    "attr-filter-dunder": (
        "{{ ()|attr('__class__')|attr('__base__')|attr('__subclasses__')() }}",
        "TWS-TPL-001",
    ),
    "attr-filter-underscore-arithmetic": (
        "{{ ()|attr('_'*2 ~ 'class' ~ '_'*2) }}",
        "TWS-TPL-002",
    ),
    "hex-escaped-dunder": ("{{ ()['\\x5f\\x5fclass\\x5f\\x5f'] }}", "TWS-TPL-001"),
    "unicode-escaped-dunder": ("{{ ()['\\u005f\\u005fclass\\u005f\\u005f'] }}", "TWS-TPL-001"),
    "reversed-dunder": ("{{ ()|attr('__ssalc__'|reverse) }}", "TWS-TPL-001"),
    "tilde-concatenated-fragments": ("{{ ()['__cla' ~ 'ss__'] }}", "TWS-TPL-002"),
    "adjacent-literal-concatenation": ("{{ ()['__cla' 'ss__'] }}", "TWS-TPL-001"),
    "percent-c-format": (
        "{{ ()|attr('%c%cclass%c%c'|format(95,95,95,95)) }}",
        "TWS-TPL-002",
    ),
    "select-string-char-extraction": (
        "{% set u = (()|select|string)[24] %}{{ ()|attr(u ~ u ~ 'class' ~ u ~ u) }}",
        "TWS-TPL-002",
    ),
    "dict-kwarg-dunder": ("{{ dict(__class__=1)|list|first }}", "TWS-TPL-001"),
    "replace-into-underscores": (
        "{{ ()|attr('XXclassXX'|replace('X', '_')) }}",
        "TWS-TPL-002",
    ),
    "str-format-field-attribute": ("{{ '{0.__class__}'.format(messages) }}", "TWS-TPL-001"),
    "include-local-file": ("{% include '/etc/passwd' %}", "TWS-TPL-003"),
    "import-macro-module": ("{% import 'evil.j2' as evil %}{{ evil.run() }}", "TWS-TPL-003"),
    "unterminated-block": ("{{ messages[0].content ", "TWS-TPL-004"),
    "unterminated-string": ("{{ 'abc }}", "TWS-TPL-004"),
    "hidden-after-raw": (
        "{% raw %}harmless{% endraw %}{{ lipsum.__globals__.os.popen('" + _CMD + "') }}",
        "TWS-TPL-001",
    ),
    "whitespace-control-variant": (
        "{%- set x = cycler -%}{{- x.__init__ -}}",
        "TWS-TPL-001",
    ),
}
