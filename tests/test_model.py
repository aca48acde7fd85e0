"""The Gaze encoder and its heads: attention maps, fused vs explicit attention, padding, losses, outputs.

Everything runs on the tiny models of conftest.py (2 layers, hidden 32, 4 heads), in fp32 and eval
mode unless a test says otherwise.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from huggingface_hub.errors import StrictDataclassClassValidationError

from model import GazeConfig, GazeForMaskedLM, GazeForSequenceClassification, GazeModel

# Sentences of different lengths, so a batch of them is padded.
SENTENCES = [
    "a gripping , funny and moving film .",
    "a tedious , boring two hours .",
    "The acting wasn't great<br /><br />but the story is wonderful, and I didn't like the café scene.",
]

IMPLEMENTATIONS = ["eager", "sdpa"]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def loaded(request, tiny_model_dir):
    """The saved tiny classifier, loaded with each attention implementation."""
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation=request.param)
    assert model.config._attn_implementation == request.param
    assert not model.training
    return model


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    encoded = tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert (encoded["attention_mask"] == 0).any(), "the test batch must contain padding"
    return encoded


def manual_attention(model: GazeForSequenceClassification, input_ids, attention_mask) -> list[torch.Tensor]:
    """softmax(QKᵀ/√d) per layer, from the module's own projections, computed here and not by the model.

    The hidden state entering layer i is `hidden_states[i]`; a forward pre-hook on each attention
    module checks that attention_norm(hidden_states[i]) is indeed what that module receives.
    """
    config = model.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    received = []
    hooks = [
        layer.attention.register_forward_pre_hook(lambda _module, args: received.append(args[0]))
        for layer in model.gaze.layers
    ]
    try:
        with torch.no_grad():
            hidden_states = model(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    finally:
        for hook in hooks:
            hook.remove()
    assert len(hidden_states) == config.num_hidden_layers + 1

    maps = []
    batch, seq = input_ids.shape
    with torch.no_grad():
        for i, layer in enumerate(model.gaze.layers):
            x = layer.attention_norm(hidden_states[i])
            torch.testing.assert_close(x, received[i], rtol=0, atol=1e-6)
            q = layer.attention.query(x).reshape(batch, seq, heads, head_dim).permute(0, 2, 1, 3)
            k = layer.attention.key(x).reshape(batch, seq, heads, head_dim).permute(0, 2, 1, 3)
            scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(head_dim)
            scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
            maps.append(torch.softmax(scores, dim=-1))
    return maps


# --- 1. Attention maps ---------------------------------------------------------------------------


def test_attention_maps_shape_rows_and_padding(loaded, batch):
    config = loaded.config
    with torch.no_grad():
        out = loaded(**batch, output_attentions=True)
    batch_size, seq = batch["input_ids"].shape
    assert out.attentions is not None and len(out.attentions) == config.num_hidden_layers
    padded = batch["attention_mask"] == 0
    for weights in out.attentions:
        assert weights.shape == (batch_size, config.num_attention_heads, seq, seq)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), rtol=0, atol=1e-6)
        # Exactly zero on padded keys, for every head and every query (padded queries included).
        keys_padded = padded[:, None, None, :].expand_as(weights)
        assert torch.all(weights[keys_padded] == 0)
        assert torch.all(weights[~keys_padded] > 0)


def test_attention_maps_equal_manual_softmax(loaded, batch):
    with torch.no_grad():
        out = loaded(**batch, output_attentions=True)
    expected = manual_attention(loaded, batch["input_ids"], batch["attention_mask"])
    for got, want in zip(out.attentions, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_config_output_attentions_works_under_sdpa(tiny_model_dir, batch):
    """Stock transformers 5 refuses `config.output_attentions=True` under sdpa; Gaze must not."""
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    model.config.output_attentions = True
    with torch.no_grad():
        out = model(**batch)  # no output_attentions argument: the config decides
    assert out.attentions is not None and len(out.attentions) == model.config.num_hidden_layers
    expected = manual_attention(model, batch["input_ids"], batch["attention_mask"])
    for got, want in zip(out.attentions, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

    # The same, set at load time and on a fresh config.
    model = GazeForSequenceClassification.from_pretrained(
        tiny_model_dir, attn_implementation="sdpa", output_attentions=True
    )
    assert model.config.output_attentions and model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert len(model(**batch).attentions) == model.config.num_hidden_layers
    config = GazeConfig(output_attentions=True, attn_implementation="sdpa")
    assert config.output_attentions


def test_attention_maps_in_bf16(tiny_model_dir, batch):
    """A bf16 model (as a bf16-saved checkpoint reloads) gives float32 maps: exact zeros on padding, rows sum to 1."""
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    padded = (batch["attention_mask"] == 0)[:, None, None, :]
    for weights in out.attentions:
        assert weights.dtype == torch.float32
        assert torch.all(weights.masked_select(padded) == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), rtol=0, atol=1e-6)


# --- 2. Fused and explicit attention agree -------------------------------------------------------


def test_fused_and_explicit_paths_give_the_same_logits(tiny_model_dir, batch, monkeypatch):
    sdpa = GazeForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    eager = GazeForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="eager")

    # Count the calls to the fused kernel, to be sure the two paths really differ.
    calls = []
    fused = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)

    with torch.no_grad():
        fused_logits = sdpa(**batch, output_attentions=False).logits
        assert len(calls) == sdpa.config.num_hidden_layers
        explicit_logits = sdpa(**batch, output_attentions=True).logits
        eager_logits = eager(**batch).logits
        assert len(calls) == sdpa.config.num_hidden_layers, "explicit and eager paths must not call SDPA"

    assert fused_logits.dtype == torch.float32
    torch.testing.assert_close(fused_logits, explicit_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused_logits, eager_logits, rtol=0, atol=1e-5)


def test_fused_and_explicit_paths_give_the_same_hidden_states(tiny_model_dir, batch):
    sdpa = GazeModel.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    with torch.no_grad():
        fused = sdpa(**batch, output_hidden_states=True).hidden_states
        explicit = sdpa(**batch, output_hidden_states=True, output_attentions=True).hidden_states
    real = batch["attention_mask"].bool()
    for a, b in zip(fused, explicit, strict=True):
        torch.testing.assert_close(a[real], b[real], rtol=0, atol=1e-5)


# --- 3. Padding changes nothing ------------------------------------------------------------------


@pytest.mark.parametrize("output_attentions", [False, True], ids=["fused", "explicit"])
def test_padded_batch_equals_single_sentences(loaded, tiny_tokenizer, output_attentions):
    batch = tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        together = loaded(**batch, output_attentions=output_attentions)
        for i, sentence in enumerate(SENTENCES):
            alone_inputs = tiny_tokenizer([sentence], return_tensors="pt")
            n = alone_inputs["input_ids"].shape[1]
            assert torch.equal(batch["input_ids"][i, :n], alone_inputs["input_ids"][0])
            alone = loaded(**alone_inputs, output_attentions=output_attentions)
            torch.testing.assert_close(together.logits[i], alone.logits[0], rtol=0, atol=1e-5)
            if output_attentions:
                for in_batch, single in zip(together.attentions, alone.attentions, strict=True):
                    torch.testing.assert_close(in_batch[i, :, :n, :n], single[0], rtol=0, atol=1e-6)


# --- 4. Heads ------------------------------------------------------------------------------------


def classifier(**overrides) -> GazeForSequenceClassification:
    torch.manual_seed(0)
    return GazeForSequenceClassification(tiny_config(**overrides)).eval()


def test_single_label_loss_is_cross_entropy(batch):
    model = classifier()
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert model.config.problem_type == "single_label_classification"
    assert out.logits.shape == (3, 2)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))


def test_multi_label_loss_is_bce_with_logits(batch):
    model = classifier(
        num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}, problem_type=None
    )
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert model.config.problem_type == "multi_label_classification"  # inferred from float labels
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))


def test_multi_label_problem_type_from_config(batch):
    model = classifier(
        num_labels=3,
        id2label={0: "a", 1: "b", 2: "c"},
        label2id={"a": 0, "b": 1, "c": 2},
        problem_type="multi_label_classification",
    )
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]])  # integer 0/1 labels are converted
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert model.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels.float()))


@pytest.mark.parametrize("label_shape", [(3,), (3, 1)])
def test_regression_loss_is_mse(batch, label_shape):
    model = classifier(num_labels=1, id2label={0: "score"}, label2id={"score": 0})
    labels = torch.tensor([0.5, -1.0, 2.0]).reshape(label_shape)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert model.config.problem_type == "regression"
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), labels.reshape(-1)))


def test_no_labels_no_loss(batch):
    with torch.no_grad():
        assert classifier()(**batch).loss is None


def masked_lm() -> GazeForMaskedLM:
    torch.manual_seed(0)
    return GazeForMaskedLM(tiny_config()).eval()


def test_masked_lm_weights_are_tied():
    model = masked_lm()
    assert model.lm_head.decoder.weight is model.gaze.embeddings.word_embeddings.weight
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_masked_lm_weights_stay_tied_after_save_and_load(tmp_path):
    model = masked_lm()
    model.save_pretrained(tmp_path)
    loaded = GazeForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm_head.decoder.weight is loaded.gaze.embeddings.word_embeddings.weight
    torch.testing.assert_close(loaded.lm_head.decoder.weight, model.gaze.embeddings.word_embeddings.weight)
    with torch.no_grad():
        loaded.gaze.embeddings.word_embeddings.weight[5, 0] = 123.0
    assert loaded.lm_head.decoder.weight[5, 0] == 123.0


def test_masked_lm_ignores_minus_100_and_logit_shapes(batch):
    model = masked_lm()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 3], labels[2, 5] = 7, 11, 13
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        out = model(ids, attention_mask=mask, labels=labels)
    vocab = model.config.vocab_size
    # As the GazeForMaskedLM docstring says: (batch, seq, vocab) without labels, (n_labeled, vocab) with.
    assert "(batch, seq, vocab)" in GazeForMaskedLM.__doc__ and "(n_labeled, vocab)" in GazeForMaskedLM.__doc__
    assert full.shape == (*ids.shape, vocab)
    assert out.logits.shape == (3, vocab)
    torch.testing.assert_close(out.logits, full[labels != -100], rtol=0, atol=1e-5)
    expected = F.cross_entropy(full.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_return_dict_false_gives_tuples(batch):
    base, clf, mlm = GazeModel(tiny_config()).eval(), classifier(), masked_lm()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1] = 7
    with torch.no_grad():
        base_out = base(**batch, return_dict=False)
        clf_out = clf(**batch, labels=torch.tensor([0, 1, 0]), return_dict=False)
        clf_attn = clf(**batch, output_attentions=True, return_dict=False)
        mlm_out = mlm(**batch, labels=labels, return_dict=False)
        clf_dict = clf(**batch, labels=torch.tensor([0, 1, 0]))
    for out in (base_out, clf_out, clf_attn, mlm_out):
        assert type(out) is tuple
    assert len(base_out) == 1 and base_out[0].shape == (*batch["input_ids"].shape, 32)
    loss, logits = clf_out
    torch.testing.assert_close(loss, clf_dict.loss)
    torch.testing.assert_close(logits, clf_dict.logits)
    assert len(clf_attn) == 2 and len(clf_attn[1]) == clf.config.num_hidden_layers  # (logits, attentions)
    assert len(mlm_out) == 2 and mlm_out[0].ndim == 0 and mlm_out[1].shape == (3, clf.config.vocab_size)


# --- Config --------------------------------------------------------------------------------------


def test_config_rejects_hidden_size_not_divisible_by_heads():
    # huggingface_hub's strict dataclasses wrap the ValueError (not a ValueError subclass).
    with pytest.raises(StrictDataclassClassValidationError, match="multiple of num_attention_heads"):
        GazeConfig(hidden_size=30, num_attention_heads=4)


def test_sequence_longer_than_positions_raises_clearly():
    model = GazeModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        model(torch.ones(1, model.config.max_position_embeddings + 1, dtype=torch.long))


def test_token_types_are_added_only_by_a_model_that_has_them():
    """type 0 by default; types given to a model with none are an error, not ignored (zeros are harmless)."""
    ids = torch.tensor([[2, 5, 6, 3, 7, 3]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1]])
    torch.manual_seed(0)
    typed = GazeModel(tiny_config(type_vocab_size=2)).eval()
    with torch.no_grad():
        default = typed(ids).last_hidden_state
        torch.testing.assert_close(typed(ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state, default)
        assert not torch.allclose(typed(ids, token_type_ids=types).last_hidden_state[0, 4:], default[0, 4:])
    untyped = GazeModel(tiny_config(type_vocab_size=0)).eval()
    untyped(ids, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(ValueError, match="this model has no token types"):
        untyped(ids, token_type_ids=types)
