"""The HTTP routes, one router per concern."""

from service.routes import embeddings, health, openai, pairs, tokens

ROUTERS = (embeddings.router, pairs.router, tokens.router, openai.router, health.router)
