"""The Hugging Face conventions of the service, against a real `bentoml serve` (one server per module):
/classify's `top_k` and `function_to_apply` (TextClassificationPipeline's meaning), token offsets and word
weights, and TEI's POST /predict."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from inference.contract import FUNCTIONS
from inference.predictor import Predictor

TEXTS = ["a gripping , funny and moving film .", "dull", "it 's a lifeless mess that does n't work ."]
LONG = "a gripping funny film " * 40  # 160 words: more than the tiny model's 64 positions


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The served model, in this process: what the server's answers must equal."""
    return Predictor(tiny_model_dir)


def post(client, path, body):
    return client.post(path, json=body)


# -- /classify: top_k and function_to_apply ---------------------------------------------------


@pytest.mark.parametrize("function", [None, *FUNCTIONS])
def test_classify_scores_follow_function_to_apply_and_top_k_lists_the_best(client, reference, function):
    response = post(
        client, "/classify", {"texts": TEXTS, "attention": "none", "function_to_apply": function, "top_k": 1}
    )
    assert response.status_code == 200, response.text
    expected = reference.predict(TEXTS, "none", function_to_apply=function, top_k=1)
    for got, want in zip(response.json()["predictions"], expected, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=2e-6)
        assert got["top"] == [{"label": got["label"], "score": got["score"]}]
        assert got["label"] == want["label"]


def test_classify_without_the_options_answers_as_before(client, reference):
    got = post(client, "/classify", {"texts": TEXTS[:1], "attention": "none"}).json()["predictions"][0]
    assert got["top"] is None and got["words"] is None
    assert sum(got["scores"].values()) == pytest.approx(1, abs=1e-5)  # softmax: the tiny model's default
    assert got["scores"] == pytest.approx(reference.predict(TEXTS[:1], "none")[0]["scores"], abs=2e-6)


# -- offsets and words ------------------------------------------------------------------------

TRICKY = [
    "I didn't like the Café scene<br />but CAN'T stop.",
    "😀🎬👍🏽 great film 🍿, isn't it?",
    "e\u0301 cafe\u0301 İstanbul ﬁlm 日本語",
    "ＦＵＬＬ width\u200b and  \t spaces \x00 here",
]


def test_offsets_and_words_index_the_text_the_client_sent(client, tiny_tokenizer):
    normalize = tiny_tokenizer.backend_tokenizer.normalizer.normalize_str
    response = post(client, "/classify", {"texts": TRICKY, "attention": "rollout"})
    assert response.status_code == 200, response.text
    for text, result in zip(TRICKY, response.json()["predictions"], strict=True):
        assert result["offsets"][0] is None and result["offsets"][-1] is None
        for token, (start, end) in zip(result["tokens"][1:-1], result["offsets"][1:-1], strict=True):
            if token != "[UNK]":
                assert normalize(text[start:end]).strip() == token.removeprefix("##"), (token, text[start:end])
        weights = result["attention"]["values"]
        for word in result["words"]:
            assert word["weight"] == pytest.approx(sum(weights[i] for i in word["tokens"]), abs=1e-4)
            assert word["start"] == result["offsets"][word["tokens"][0]][0]
            assert word["end"] == result["offsets"][word["tokens"][-1]][1]
    first = response.json()["predictions"][0]
    text = TRICKY[0]
    assert [text[w["start"] : w["end"]] for w in first["words"]][:7] == ["I", "did", "n", "'", "t", "like", "the"]


def test_offsets_count_a_replaced_surrogate_as_one_character(client):
    raw = '{"texts": ["lone \\ud800 dull film"], "attention": "none"}'  # valid JSON, not valid Unicode
    response = client.post("/classify", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    text = "lone \ud800 dull film"
    result = response.json()["predictions"][0]
    assert [text[s:e] for s, e in result["offsets"][-3:-1]] == ["dull", "film"]


# -- POST /predict (Text Embeddings Inference) -------------------------------------------------


def test_predict_one_text_is_every_label_best_first(client, reference):
    response = post(client, "/predict", {"inputs": TEXTS[0]})
    assert response.status_code == 200, response.text
    assert float(response.headers["x-queue-time"]) >= 0 and int(response.headers["x-batch-size"]) >= 1
    labels = response.json()
    assert [set(entry) for entry in labels] == [{"label", "score"}] * 2
    assert labels[0]["score"] >= labels[1]["score"]
    expected = reference.predict(TEXTS[:1], "none")[0]["scores"]
    assert {entry["label"]: entry["score"] for entry in labels} == pytest.approx(expected, abs=2e-6)


def test_predict_a_list_answers_a_list_and_raw_scores_are_logits(client, reference):
    for raw_scores, function in ((False, "softmax"), (True, "none")):
        response = post(client, "/predict", {"inputs": TEXTS, "raw_scores": raw_scores})
        assert response.status_code == 200, response.text
        answers = response.json()
        assert len(answers) == len(TEXTS)
        for labels, want in zip(answers, reference.predict(TEXTS, "none", function_to_apply=function), strict=True):
            assert [entry["score"] for entry in labels] == sorted((e["score"] for e in labels), reverse=True)
            assert {entry["label"]: entry["score"] for entry in labels} == pytest.approx(want["scores"], abs=2e-6)
    single = post(client, "/predict", {"inputs": [TEXTS[1]]}).json()
    assert len(single) == 1 and isinstance(single[0], list)  # a list of one text is still a list


def test_predict_takes_tei_pairs_and_its_batch_form(client, reference):
    """TEI's batch items: [text] is a text, [text, text] a pair, joined as BERT joins them (the Predictor's
    pairs); mixed with plain texts in one list."""
    pair = ("a gripping , funny film .", "it 's a lifeless mess .")
    response = post(client, "/predict", {"inputs": [list(pair), [TEXTS[1]], TEXTS[2], list(pair[::-1])]})
    assert response.status_code == 200, response.text
    expected = reference.predict([pair, TEXTS[1], TEXTS[2], pair[::-1]], "none")
    answers = response.json()
    for labels, want in zip(answers, expected, strict=True):
        assert {entry["label"]: entry["score"] for entry in labels} == pytest.approx(want["scores"], abs=2e-6)
    assert expected[0]["tokens"].count("[SEP]") == 2 and answers[0] != answers[3]  # the order of a pair matters


def test_predict_refuses_an_over_long_text_unless_truncate_is_true(client, reference):
    response = post(client, "/predict", {"inputs": ["ok", LONG]})
    assert response.status_code == 413
    assert response.json()["error"].startswith("inputs[1] has more than 64 tokens, the model's limit")
    assert post(client, "/predict", {"inputs": LONG, "truncate": False}).json()["error"].startswith("inputs has")
    response = post(client, "/predict", {"inputs": LONG, "truncate": True})
    assert response.status_code == 200, response.text
    expected = reference.predict([LONG], "none")[0]
    assert expected["truncated"]
    assert {e["label"]: e["score"] for e in response.json()} == pytest.approx(expected["scores"], abs=2e-6)


def test_info_and_health_answer_as_tei_does(client, reference):
    """GET /info: what a TEI client reads before it sends (model, labels, limits); GET /health: 200 when ready."""
    response = client.get("/info")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    info = response.json()
    labels = dict(enumerate(reference.labels))
    assert info["model_type"] == {"classifier": {"id2label": {str(i): name for i, name in labels.items()},
                                                 "label2id": {name: i for i, name in labels.items()}}}  # fmt: skip
    assert info["max_input_length"] == reference.max_length == 64
    assert (info["max_client_batch_size"], info["max_input_chars"]) == (64, 10_000)
    assert info["multi_label"] is False and info["device"] == "cpu" and info["precision"] in ("fp32", "bf16")
    assert info["attention"] == {"layers": reference.num_layers, "heads": reference.num_heads}
    health = client.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    refused = client.post("/info", json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET" and "takes GET" in refused.json()["error"]


def test_predict_and_classify_share_the_batcher(server):
    def count(metrics: str, name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", metrics, re.M))

    before = httpx.get(f"{server}/metrics").text

    def send(i: int) -> httpx.Response:
        with httpx.Client(timeout=60) as c:
            if i % 2:
                return c.post(f"{server}/predict", json={"inputs": [f"{TEXTS[i % 3]} #{i}"] * 2})
            return c.post(f"{server}/classify", json={"texts": [f"{TEXTS[i % 3]} #{i}"] * 2, "attention": "cls"})

    shared = False
    for _ in range(5):  # bursts until a /predict shares a batch (on a fast machine a burst may never overlap)
        with ThreadPoolExecutor(max_workers=24) as pool:
            responses = list(pool.map(send, range(24)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        after = httpx.get(f"{server}/metrics").text
        # Every request of both routes went through the batcher (a request split over batches counts in each).
        assert count(after, "gaze_batch_requests") - count(before, "gaze_batch_requests") >= 24
        before = after
        shared = any(int(r.headers["x-batch-size"]) > 2 for r in responses[1::2])
        if shared:
            break
    assert shared, "no /predict shared a batch with another request in 5 bursts of 24"


# -- bad values: 4xx with the contract's JSON body ----------------------------------------------

BAD_REQUESTS = [
    # (path, body, status, the error message contains)
    ("/classify", {"texts": ["ok"], "top_k": 0}, 400, "top_k must be an integer of at least 1 (or null), got 0"),
    ("/classify", {"texts": ["ok"], "top_k": -2}, 400, "top_k must be an integer of at least 1"),
    ("/classify", {"texts": ["ok"], "top_k": 1.5}, 400, "top_k must be an integer of at least 1"),
    ("/classify", {"texts": ["ok"], "top_k": True}, 400, "top_k must be an integer of at least 1"),
    ("/classify", {"texts": ["ok"], "top_k": "2"}, 400, "top_k must be an integer of at least 1"),
    ("/classify", {"texts": ["ok"], "function_to_apply": "tanh"}, 400, "unknown function_to_apply 'tanh'"),
    ("/classify", {"texts": ["ok"], "function_to_apply": ["none"]}, 400, "unknown function_to_apply"),
    ("/predict", {"inputs": []}, 400, "'inputs' is empty; send a string or a list of 1 to 64 strings"),
    ("/predict", {"inputs": ["x"] * 65}, 413, "too many inputs: 65; the limit is 64"),
    ("/predict", {"inputs": ["ok", 3]}, 400, "inputs[1] is not a string (got a number)"),
    ("/predict", {"inputs": ["ok", None]}, 400, "inputs[1] is not a string (got null)"),
    ("/predict", {"inputs": [["a", "b", "c"]]}, 400, "inputs[0] has 3 items; a list in 'inputs' is [text] or a pair"),
    ("/predict", {"inputs": ["ok", []]}, 400, "inputs[1] has 0 items"),
    ("/predict", {"inputs": [["ok", 3]]}, 400, "inputs[0][1] is not a string (got a number)"),
    ("/predict", {"inputs": [["ok", " "]]}, 400, "inputs[0][1] is empty or whitespace-only"),
    ("/predict", {"inputs": [["ok", "\u200b"]]}, 400, "inputs[0][1] ('\\u200b') has no tokens"),
    ("/predict", {"inputs": [["x" * 5000, "y" * 5001]]}, 413, "inputs[0] has 10001 characters in its two texts"),
    ("/predict", {"inputs": 7}, 400, "'inputs' must be a string or a list of strings, got a number"),
    ("/predict", {"inputs": {"text": "x"}}, 400, "'inputs' must be a string or a list of strings, got an object"),
    ("/predict", {"inputs": " \t\n"}, 400, "inputs is empty or whitespace-only"),
    ("/predict", {"inputs": ["ok", ""]}, 400, "inputs[1] is empty or whitespace-only"),
    ("/predict", {"inputs": "x" * 10_001}, 413, "inputs has 10001 characters; the limit is 10000"),
    ("/predict", {"inputs": "ok", "raw_scores": "yes"}, 400, "'raw_scores' must be true or false, got a string"),
    ("/predict", {"inputs": "ok", "truncate": 1}, 400, "'truncate' must be true or false, got a number"),
    ("/predict", {"inputs": "ok", "parameters": {}}, 400, "unknown field 'parameters'; the fields are 'inputs'"),
    ("/predict", {"texts": ["ok"]}, 400, "unknown field 'texts'"),
    ("/predict", {}, 400, "missing field 'inputs'"),
    ("/predict", ["ok"], 400, 'the body must be a JSON object like {"inputs": "..."}, got a list'),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS])
def test_invalid_values_get_a_clear_4xx(client, path, body, status, message):
    response = post(client, path, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b'{"inputs": "ok"', "application/json", 400, "malformed JSON: Expecting"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "malformed JSON"),
        (b'{"inputs": "' + b"9" * 5000 + b'"}', "application/json", 200, None),
        (b'{"inputs": "ok", "truncate": ' + b"9" * 5000 + b"}", "application/json", 400, "more than 4300 digits"),
        (b'{"inputs": "ok"}', "text/plain", 415, "Content-Type must be application/json"),
    ],
)
def test_malformed_predict_bodies(client, content, content_type, status, message):
    response = client.post("/predict", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    if message is not None:
        assert message in response.json()["error"]


def test_openapi_documents_the_options_and_predict(client):
    spec = client.get("/docs.json").json()
    classify = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "function_to_apply" in classify["properties"] and "top_k" in classify["properties"]
    assert json.dumps(list(FUNCTIONS))[1:-1] in json.dumps(classify["properties"]["function_to_apply"])
    assert '"minimum": 1' in json.dumps(classify["properties"]["top_k"])
    predict = spec["paths"]["/predict"]["post"]
    request = predict["requestBody"]
    assert request["required"] is True
    properties = request["content"]["application/json"]["schema"]["properties"]
    assert set(properties) == {"inputs", "raw_scores", "truncate"}
    assert properties["raw_scores"]["default"] is False and properties["truncate"]["default"] is False
    assert {"400", "413", "415", "429", "503"} <= set(predict["responses"])
    assert "LabelScore" in json.dumps(predict["responses"]["200"])
