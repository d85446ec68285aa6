"""The clients people already use, as installed from the package index, against a real service
process: each returns /embed's vectors (cosine >= 0.9999) or /similarity's cosines (within 1e-3).
Each test is the README's example for that client, run."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.service.conftest import ServiceProcess

TEXTS = ["a man is playing the guitar", "a dog runs in the park"]


def embed(url: str, texts: list[str]) -> np.ndarray:
    return np.array(httpx.post(f"{url}/embed", json={"inputs": texts}).json())


def assert_same_vectors(got, url: str, texts: list[str]) -> None:
    got = np.array(got, dtype=np.float64).reshape(len(texts), -1)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    assert (got * embed(url, texts)).sum(1).min() >= 0.9999


def test_huggingface_hub_inference_client(served: ServiceProcess) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=served.url)  # the service's URL stands for the model
    vector = client.feature_extraction(TEXTS[0])  # POST /
    scores = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    assert_same_vectors(vector, served.url, TEXTS[:1])
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}}
    np.testing.assert_allclose(
        scores, httpx.post(f"{served.url}/similarity", json=body).json(), atol=1e-3
    )


def test_huggingface_hub_async_client(served: ServiceProcess) -> None:
    from huggingface_hub import AsyncInferenceClient

    async def run():
        return await AsyncInferenceClient(model=served.url).feature_extraction(TEXTS[1])

    assert_same_vectors(asyncio.run(run()), served.url, TEXTS[1:])


def test_openai_client_sync_and_async(served: ServiceProcess) -> None:
    from openai import AsyncOpenAI, OpenAI

    client = OpenAI(base_url=f"{served.url}/v1", api_key="unused")
    data = client.embeddings.create(model="gensen-tiny", input=TEXTS).data
    assert_same_vectors([d.embedding for d in data], served.url, TEXTS)

    async def run():
        aclient = AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused")
        return (await aclient.embeddings.create(model="gensen-tiny", input=TEXTS)).data

    assert_same_vectors([d.embedding for d in asyncio.run(run())], served.url, TEXTS)


def test_langchain_openai_embeddings(served: ServiceProcess) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        base_url=f"{served.url}/v1",
        api_key="unused",
        model="gensen-tiny",
        check_embedding_ctx_length=False,  # send text, not OpenAI's tiktoken ids
    )
    assert_same_vectors(embeddings.embed_documents(TEXTS), served.url, TEXTS)
    assert_same_vectors(embeddings.embed_query(TEXTS[0]), served.url, TEXTS[:1])
    assert_same_vectors(asyncio.run(embeddings.aembed_documents(TEXTS)), served.url, TEXTS)


def test_llama_index_text_embeddings_inference(served: ServiceProcess) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embeddings = TextEmbeddingsInference(base_url=served.url, model_name="gensen-tiny")
    assert_same_vectors(embeddings.get_text_embedding(TEXTS[0]), served.url, TEXTS[:1])
    assert_same_vectors(embeddings.get_query_embedding(TEXTS[1]), served.url, TEXTS[1:])
    vector = asyncio.run(embeddings.aget_text_embedding(TEXTS[0]))
    assert_same_vectors(vector, served.url, TEXTS[:1])


@pytest.mark.parametrize("model", ["gensen-tiny"])
def test_the_served_model_name_is_the_tiny_bundles(served: ServiceProcess, model: str) -> None:
    assert httpx.get(f"{served.url}/v1/models").json()["data"][0]["id"] == model
