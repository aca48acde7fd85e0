"""Token attributions (`attribution`/`target`): the predictor's methods against direct autograd
computations on the tiny model, the CLI, and the HTTP option against a real `bentoml serve`."""

import json
import math

import pytest
import torch

from inference import predict as cli
from inference.attributions import log_odds
from inference.contract import ATTRIBUTIONS, Options
from inference.predictor import Item, Predictor
from model import GazeForSequenceClassification

METHODS = [method for method in ATTRIBUTIONS if method != "none"]
SENTENCES = [
    "a gripping , funny and moving film .",
    "dull",
    "it 's a dull , lifeless mess that does n't work , and the ending is terrible .",
]


@pytest.fixture(scope="module")
def tiny_model_dir(wide_model_dir):
    """This module's model, the one its server serves too: conftest's wide one (attributions not all ~0)."""
    return wide_model_dir


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(tiny_model_dir, max_batch_size=2)  # small buckets: texts of a request share some


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The same weights, loaded separately, for computations by hand."""
    return GazeForSequenceClassification.from_pretrained(tiny_model_dir).eval()


def alone(predictor, text):
    """(input_ids, attention_mask) of one text, unpadded."""
    ids = torch.tensor([predictor.encode([text])[0].ids])
    return ids, torch.ones_like(ids)


# -- the predictor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_one_finite_value_per_token_for_the_predicted_label(predictor, method):
    for result in predictor.predict(SENTENCES, "rollout", method):
        attribution = result["attribution"]
        assert attribution["method"] == method and attribution["target"] == result["label"]
        assert len(attribution["values"]) == len(result["tokens"])
        assert all(math.isfinite(value) for value in attribution["values"])
        assert any(value != 0 for value in attribution["values"])
        assert result["attention"]["mode"] == "rollout"  # both, from one item


def test_no_attribution_is_null(predictor):
    assert all(result["attribution"] is None for result in predictor.predict(SENTENCES, "cls"))


@pytest.mark.parametrize("method", METHODS)
def test_each_text_in_a_padded_batch_gets_what_it_gets_alone(predictor, method):
    together = predictor.predict(SENTENCES, "none", method)
    for text, result in zip(SENTENCES, together, strict=True):
        single = predictor.predict([text], "none", method)[0]["attribution"]["values"]
        assert result["attribution"]["values"] == pytest.approx(single, abs=2e-4)


def test_gradient_x_input_is_the_embedding_gradient_times_the_embedding(predictor, reference):
    """The same number by hand: d log-odds / d embedding · embedding, summed over the hidden axis."""
    for text, result in zip(SENTENCES, predictor.predict(SENTENCES, "none", "gradient_x_input"), strict=True):
        captured: list[torch.Tensor] = []
        hook = reference.get_input_embeddings().register_forward_hook(
            lambda module, inputs, output, captured=captured: captured.append(output)
        )
        ids, mask = alone(predictor, text)
        logits = reference(input_ids=ids, attention_mask=mask).logits[0]
        hook.remove()
        target = predictor.labels.index(result["label"])
        chosen = logits[target] - logits[1 - target]  # two labels: the log-odds is the difference of the logits
        (gradient,) = torch.autograd.grad(chosen, captured[0])
        expected = (gradient * captured[0]).sum(-1)[0]
        got = torch.tensor(result["attribution"]["values"])
        torch.testing.assert_close(got, expected.detach(), atol=6e-5, rtol=0)


def test_integrated_gradients_add_up_to_the_change_from_the_baseline(predictor, reference):
    """Completeness: the values sum to f(text) − f(baseline), f the target's log-odds (20 steps: within 1 %)."""
    for text in SENTENCES:
        ids, mask = alone(predictor, text)
        for target in (0, 1):
            values = predictor.attributor.scores("integrated_gradients", ids, mask, [target])[0]
            baseline = predictor.attributor.baseline(ids)
            assert baseline[0, 0] == ids[0, 0] and baseline[0, -1] == ids[0, -1]  # [CLS], [SEP] kept
            assert (baseline[0, 1:-1] == predictor.pad_id).all()
            with torch.no_grad():
                change = (
                    log_odds(reference(input_ids=ids, attention_mask=mask).logits)
                    - log_odds(reference(input_ids=baseline, attention_mask=mask).logits)
                )[0, target].item()
            assert values.sum().item() == pytest.approx(change, rel=0.01, abs=1e-3)
            assert values[0] == 0 and values[-1] == 0  # [CLS] and [SEP] are where they start


def test_attention_gradient_follows_chefer_et_al(predictor, reference):
    """R = I; per layer R += mean_h((∇A ⊙ A)⁺) · R; the [CLS] row without the identity, by hand."""
    for text, result in zip(SENTENCES, predictor.predict(SENTENCES, "none", "attention_gradient"), strict=True):
        ids, mask = alone(predictor, text)
        output = reference(input_ids=ids, attention_mask=mask, output_attentions=True)
        for weights in output.attentions:
            weights.retain_grad()
        target = predictor.labels.index(result["label"])
        (output.logits[0, target] - output.logits[0, 1 - target]).backward()
        t = ids.shape[1]
        relevance = torch.eye(t)
        for weights in output.attentions:
            relevance = relevance + (weights.grad * weights).clamp(min=0)[0].mean(0) @ relevance
        expected = (relevance[0] - torch.eye(t)[0]).detach()
        torch.testing.assert_close(torch.tensor(result["attribution"]["values"]), expected, atol=6e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_another_target_gives_other_values(predictor, method):
    for_negative = predictor.predict(SENTENCES, "none", method, target="negative")
    for_positive = predictor.predict(SENTENCES, "none", method, target="positive")
    for negative, positive in zip(for_negative, for_positive, strict=True):
        assert (negative["attribution"]["target"], positive["attribution"]["target"]) == ("negative", "positive")
        assert negative["attribution"]["values"] != positive["attribution"]["values"]
        if method != "attention_gradient":  # two labels: one's log-odds is minus the other's
            assert negative["attribution"]["values"] == pytest.approx(
                [-v for v in positive["attribution"]["values"]], abs=2e-4
            )


def test_bad_method_or_target_is_a_clear_error(predictor):
    with pytest.raises(ValueError, match="unknown attribution 'shap'"):
        predictor.predict(["ok"], "none", "shap")
    with pytest.raises(ValueError, match="unknown target label 'neutral'; the labels are negative, positive"):
        predictor.predict(["ok"], "none", "gradient_x_input", "neutral")
    with pytest.raises(ValueError, match="needs an 'attribution'"):
        predictor.predict(["ok"], "none", "none", "positive")


def test_attributions_count_in_the_cost(predictor):
    encoding = predictor.encode(["a gripping , funny and moving film ."])[0]
    plain, gradient, integrated = (
        predictor.cost_ms(Item(encoding, Options("none", method)))
        for method in ("none", "gradient_x_input", "integrated_gradients")
    )
    assert plain < gradient < integrated
    assert integrated - plain == pytest.approx(20 * (gradient - plain))


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_lists_the_tokens_by_attribution(tiny_model_dir, capsys):
    args = ["a gripping , funny film", "--model", str(tiny_model_dir), "--top", "3"]
    assert cli.main([*args, "--attribution", "integrated_gradients", "--target", "negative"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  integrated_gradients for 'negative':"
    weights = [float(line.split()[1]) for line in lines[2:]]
    assert len(weights) == 3 and weights == sorted(weights, reverse=True)

    assert cli.main([*args, "--attribution", "attention_gradient", "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["attribution"]["method"] == "attention_gradient"
    assert prediction["attribution"]["target"] == prediction["label"]

    assert cli.main([*args, "--attribution", "gradient_x_input", "--target", "neutral"]) == 2
    assert "unknown target label 'neutral'" in capsys.readouterr().err


# -- over HTTP, against a real server ----------------------------------------------------------------


def classify(client, **body):
    return client.post("/classify", json={"texts": SENTENCES, **body})


@pytest.mark.parametrize("method", METHODS)
def test_the_service_returns_attributions(client, predictor, method):
    response = classify(client, attention="none", attribution=method)
    assert response.status_code == 200, response.text
    expected = predictor.predict(SENTENCES, "none", method)  # the same weights, in process
    for got, wanted in zip(response.json()["predictions"], expected, strict=True):
        assert got["attribution"]["method"] == method and got["attribution"]["target"] == got["label"]
        assert got["attribution"]["values"] == pytest.approx(wanted["attribution"]["values"], abs=2e-4)
        assert got["attention"] is None


def test_the_service_attributes_the_target_asked_for(client):
    for target in ("negative", "positive"):
        response = classify(client, attribution="gradient_x_input", target=target)
        assert response.status_code == 200, response.text
        assert {p["attribution"]["target"] for p in response.json()["predictions"]} == {target}
    assert all(p["attribution"] is None for p in classify(client).json()["predictions"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"attribution": "shap"}, "unknown attribution 'shap'; expected one of none, gradient_x_input"),
        ({"attribution": ["gradient_x_input"]}, "unknown attribution ['gradient_x_input']"),
        ({"attribution": "gradient_x_input", "target": 1}, "'target' must be a label (a string), got a number"),
        ({"attribution": "gradient_x_input", "target": "neutral"}, "unknown target label 'neutral'; the labels are"),
        ({"target": "positive"}, "'target' names the label to attribute: it needs an 'attribution'"),
    ],
)
def test_bad_attribution_options_get_a_clear_400(client, body, message):
    response = classify(client, **body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_attributions_over_the_cost_limit_are_413(client):
    texts = ["a gripping , funny and moving film , with a story that works . " * 4] * 64  # 64 × 64 tokens
    costly = client.post("/classify", json={"texts": texts, "attribution": "integrated_gradients"})
    assert costly.status_code == 413
    assert "the limit is" in costly.json()["error"] and "a cheaper attribution" in costly.json()["error"]
    cheap = client.post("/classify", json={"texts": texts, "attribution": "gradient_x_input"})
    assert cheap.status_code == 200  # 20 times cheaper


def test_openapi_documents_the_options(client):
    spec = client.get("/docs.json").json()
    request = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["attribution"]["enum"] == list(ATTRIBUTIONS)
    assert request["properties"]["attribution"]["default"] == "none"
    assert "target" in request["properties"]
