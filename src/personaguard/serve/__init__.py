"""Serving: an OpenAI-compatible server (`app`), the model and adapters behind it (`engine`), the
persona registry (`personas`), the web playground (`playground.html`) and the terminal chat (`chat`)."""
