"""The HTTP routes, one router per concern."""

from service.routes import embeddings, health, openai, pairs

ROUTERS = (embeddings.router, pairs.router, openai.router, health.router)
