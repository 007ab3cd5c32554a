"""Drives the gateway with the official `anthropic` and `openai` Python SDKs.

Usage: sdk_check.py anthropic|openai BASE_URL TOKEN TEXT_MODEL TOOL_MODEL [bearer]

Runs, through one route: a plain request, a streamed request, and a tool-use round trip whose
tool call is streamed (the SDK must accumulate the argument fragments into the right input).
Prints one "ok: ..." line per check; any failure raises (non-zero exit).
"""

import json
import sys

TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
EXPECTED_INPUT = {"city": "Paris"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


def run_anthropic(base, token, text_model, tool_model, bearer):
    import anthropic

    if bearer:
        # What Claude Code does with ANTHROPIC_AUTH_TOKEN.
        client = anthropic.Anthropic(base_url=base, auth_token=token, api_key=None, max_retries=0)
    else:
        # What Claude Code does with ANTHROPIC_API_KEY (sent as x-api-key).
        client = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)

    msg = client.messages.create(
        model=text_model,
        max_tokens=64,
        # Newer SDKs dropped the sampling keyword arguments; the API still takes the field.
        extra_body={"temperature": 0},
        system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": "Hi"}],
    )
    check(msg.content[0].type == "text" and "stand-in" in msg.content[0].text, "anthropic create text")
    check(msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, "anthropic create usage")

    with client.messages.stream(
        model=text_model, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check("stand-in" in text, "anthropic stream text")
    check(final.stop_reason == "end_turn", "anthropic stream stop_reason")

    with client.messages.stream(
        model=tool_model,
        max_tokens=64,
        tools=[TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    check(len(tool_uses) == 1, "anthropic stream tool_use block")
    check(tool_uses[0].input == EXPECTED_INPUT, f"anthropic accumulated tool input {tool_uses[0].input}")
    check(final.stop_reason == "tool_use", "anthropic tool stop_reason")

    answer = client.messages.create(
        model=text_model,
        max_tokens=64,
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_uses[0].id, "content": "sunny, 21C"}
                ],
            },
        ],
    )
    check(answer.content[0].type == "text", "anthropic tool round trip")

    try:
        client.messages.create(model="claude-missing-x", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected NotFoundError")
    except anthropic.NotFoundError as e:
        check(e.status_code == 404, "anthropic error mapped to NotFoundError")


def run_openai(base, token, text_model, tool_model):
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    r = client.chat.completions.create(
        model=text_model, temperature=0, messages=[{"role": "user", "content": "Hi"}]
    )
    check("stand-in" in r.choices[0].message.content, "openai create text")
    check(r.usage.total_tokens > 0, "openai create usage")

    stream = client.chat.completions.create(
        model=text_model,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hi"}],
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    check("stand-in" in text, "openai stream text")
    check(usage is not None and usage.completion_tokens > 0, "openai stream usage")

    tools = [{"type": "function", "function": {"name": TOOL["name"], "description": TOOL["description"],
                                               "parameters": TOOL["input_schema"]}}]
    stream = client.chat.completions.create(
        model=tool_model, stream=True, tools=tools, messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
        finish = choice.finish_reason or finish
    check(len(calls) == 1 and calls[0]["name"] == "get_weather", "openai streamed tool call")
    check(json.loads(calls[0]["arguments"]) == EXPECTED_INPUT, "openai accumulated tool arguments")
    check(finish == "tool_calls", "openai finish_reason tool_calls")

    answer = client.chat.completions.create(
        model=text_model,
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": calls[0]["id"], "type": "function",
                 "function": {"name": "get_weather", "arguments": calls[0]["arguments"]}}]},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21C"},
        ],
    )
    check(answer.choices[0].message.content, "openai tool round trip")

    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"Authorization": "Bearer byok_wrong"})
        raise AssertionError("expected AuthenticationError")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "openai error mapped to AuthenticationError")


def main():
    sdk, base, token, text_model, tool_model = sys.argv[1:6]
    bearer = len(sys.argv) > 6 and sys.argv[6] == "bearer"
    if sdk == "anthropic":
        run_anthropic(base, token, text_model, tool_model, bearer)
    else:
        run_openai(base, token, text_model, tool_model)


if __name__ == "__main__":
    main()
