"""The official Anthropic SDK against orchestrated /v1/messages (a Brigade stand-in behind).

Usage: brigade_check.py BASE_URL TOKEN. Exits non-zero with a message on the first failed check.
"""
import sys

import anthropic

MODEL = "brigade/anthropic/claude-sonnet-4-5"
TOOLS = [{
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    base, token = sys.argv[1:3]
    client = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)

    msg = client.messages.create(model=MODEL, max_tokens=64, extra_body={"temperature": 0},
                                 messages=[{"role": "user", "content": "Hello"}])
    check(msg.id.startswith("msg_"), f"message id {msg.id}")
    check(msg.content[0].type == "text" and msg.content[0].text == "Brigade did it", f"text {msg.content}")
    check(msg.stop_reason == "end_turn", f"stop_reason {msg.stop_reason}")
    check(msg.usage.input_tokens == 11 and msg.usage.output_tokens == 7, f"usage {msg.usage}")

    msg = client.messages.create(model=MODEL, max_tokens=64, tools=TOOLS,
                                 messages=[{"role": "user", "content": "Please use a tool"}])
    tool = [b for b in msg.content if b.type == "tool_use"]
    check(len(tool) == 1 and tool[0].input == {"city": "Paris"}, f"tool_use {msg.content}")
    check(msg.stop_reason == "tool_use", f"stop_reason {msg.stop_reason}")

    with client.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS,
                                messages=[{"role": "user", "content": "Stream and use a tool"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text == "Brigade did it", f"streamed text {text!r}")
    tool = [b for b in final.content if b.type == "tool_use"]
    check(len(tool) == 1 and tool[0].input == {"city": "Paris", "units": "metric"}, f"streamed tool {final.content}")
    check(final.stop_reason == "tool_use" and final.usage.output_tokens == 9, f"final {final}")

    try:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "fail"}])
        check(False, "a failed task raises")
    except anthropic.APIStatusError as e:
        check(e.status_code == 502 and "agent crashed" in str(e), f"failure {e.status_code} {e}")

    for prompt, words in (("cut", "cut short"), ("task fails", "agent gave up")):
        try:
            with client.messages.stream(model=MODEL, max_tokens=8,
                                        messages=[{"role": "user", "content": prompt}]) as stream:
                for _ in stream:
                    pass
            check(False, f"{prompt}: a broken stream raises")
        except anthropic.APIError as e:
            check(words in str(e), f"{prompt}: {e}")
    print("ok")


if __name__ == "__main__":
    main()
