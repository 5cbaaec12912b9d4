# This file is the implementation of custom LLM custom-chat-plugin
from langchain_mesh.plugins import BaseLLM
from openai import OpenAI


def _content(message):
    """A seed-format message's content in the Chat Completions format."""
    parts = message.get("parts")
    if not parts:
        return message.get("content") or ""
    out = []
    for part in parts:
        if part["type"] == "TEXT":
            out.append({"type": "text", "text": part["text"]})
        elif part["type"] == "IMAGE_INLINE":
            url = "data:%s;base64,%s" % (part["imageMimeType"], part["inlineImage"])
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif part["type"] == "IMAGE_URI":
            out.append({"type": "image_url", "image_url": {"url": part["imageUrl"]}})
    return out


def _messages(query):
    out = []
    for message in query["messages"]:
        if message["role"] == "tool":
            for tool_output in message["toolOutputs"]:
                out.append({"role": "tool", "tool_call_id": tool_output["callId"], "content": tool_output["output"]})
        elif message.get("toolCalls"):
            out.append({"role": "assistant", "content": message.get("content") or None,
                        "tool_calls": message["toolCalls"]})
        else:
            out.append({"role": message["role"], "content": _content(message)})
    return out


_SETTINGS = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens",
             "stopSequences": "stop", "presencePenalty": "presence_penalty",
             "frequencyPenalty": "frequency_penalty", "seed": "seed"}


def _response_format(fmt):
    if fmt.get("type") == "text":
        return {"type": "text"}
    if not fmt.get("schema"):
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.get("name") or "answer", "schema": fmt["schema"],
                                                  "strict": bool(fmt.get("strict"))}}


def _tool_choice(choice):
    if choice["type"] == "tool_name":
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice["type"]


class MyLLM(BaseLLM):
    def __init__(self):
        pass

    def set_config(self, config: dict, plugin_config: dict) -> None:
        self.config = config
        self.model = config.get("model", None)
        self.api_key = config.get('api_key').get('param_set_api_key')
        self.client = OpenAI(api_key=self.api_key)

    def _request(self, query, settings):
        request = {"model": self.model, "messages": _messages(query)}
        for name, value in settings.items():
            if name in _SETTINGS:
                request[_SETTINGS[name]] = value
            elif name == "tools":
                request["tools"] = value
            elif name == "toolChoice":
                request["tool_choice"] = _tool_choice(value)
            elif name == "responseFormat":
                request["response_format"] = _response_format(value)
            else:
                raise ValueError("setting %r is not supported by this LLM" % name)
        return request

    def process(self, query, settings, trace):
        response = self.client.chat.completions.create(**self._request(query, settings))
        choice = response.choices[0]
        return {
            "text": choice.message.content or "",
            "toolCalls": [call.model_dump() for call in choice.message.tool_calls or []],
            "finishReason": choice.finish_reason,
            "promptTokens": response.usage.prompt_tokens if response.usage else 0,
            "completionTokens": response.usage.completion_tokens if response.usage else 0,
        }

    def process_stream(self, query, settings, trace):
        stream = self.client.chat.completions.create(
            **self._request(query, settings), stream=True, stream_options={"include_usage": True})
        calls, usage, finish_reason = {}, None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            finish_reason = chunk.choices[0].finish_reason or finish_reason
            if delta.content:
                yield {"chunk": {"text": delta.content}}
            for call in delta.tool_calls or []:
                acc = calls.setdefault(call.index, {"type": "function", "id": None,
                                                    "function": {"name": "", "arguments": ""}})
                acc["id"] = call.id or acc["id"]
                if call.function and call.function.name:
                    acc["function"]["name"] += call.function.name
                if call.function and call.function.arguments:
                    acc["function"]["arguments"] += call.function.arguments
        yield {"footer": {
            "toolCalls": [calls[i] for i in sorted(calls)],
            "finishReason": finish_reason,
            "promptTokens": usage.prompt_tokens if usage else 0,
            "completionTokens": usage.completion_tokens if usage else 0,
        }}
