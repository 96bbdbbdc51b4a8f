"""Everything that talks to an OpenAI-compatible chat server, for the judges and the `openai` backend.

- :mod:`.config`: what an endpoint is (:class:`~.config.Endpoint`: URL, model, the *name* of the
  key's environment variable, and the SDK options a judge spec can set), URL cleaning and the
  redactor that keeps keys out of every stored or printed message. No ``openai`` import, so judge
  specs parse without loading the SDK.
- :mod:`.retry`: which failures are transient, how long to wait (``Retry-After`` first, then capped
  jittered backoff), as a tenacity policy.
- :mod:`.client`: :class:`~.client.ChatClient`, one ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``)
  client with the SDK's own retries off, returning a typed :class:`~.client.ChatReply` or raising
  an :class:`~.retry.EndpointError` whose ``kind`` says what went wrong.

This package sits below ``pspo_eval.generation`` and ``pspo_eval.judge`` and imports neither.
"""
