"""pyssl's token masking and MLM loss against Hugging Face transformers: the law of
``DataCollatorForLanguageModeling.torch_mask_tokens`` (chosen fraction and 80/10/10 split,
homogeneity chi-square over many draws; the random streams differ) and BERT's MLM head loss
(``F.cross_entropy`` over the vocabulary logits). Runs where transformers installs (CI's peers
environment); skipped elsewhere. The tokenizer is built in memory: nothing is downloaded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyssl import ops

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed")

VOCAB = 1000
MASK = 4


def collator(mr: float, rr: float):  # type: ignore[no-untyped-def]
    specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": MASK}
    vocab = {**specials, **{f"w{i}": i + 5 for i in range(VOCAB - 5)}}
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(model),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return transformers.DataCollatorForLanguageModeling(
        tok, mlm_probability=0.15, mask_replace_prob=mr, random_replace_prob=rr
    )


def classes(ids, masked, labels):  # type: ignore[no-untyped-def]
    chosen = labels != -100
    to_mask = (masked == MASK) & chosen
    kept = (masked == ids) & chosen & ~to_mask
    return int(chosen.sum()), np.array(
        [int(to_mask.sum()), int((chosen & ~to_mask & ~kept).sum()), int(kept.sum())]
    )


@pytest.mark.parametrize("split", [(0.8, 0.1), (0.5, 0.3)])
def test_mask_tokens_law_matches_hugging_face(split):
    torch.manual_seed(0)
    ids = torch.randint(5, VOCAB, (64, 512), generator=torch.Generator().manual_seed(1))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    hf_masked, hf_labels = collator(*split).torch_mask_tokens(ids.clone(), special.clone())
    ours = ops.mask_tokens(
        ids,
        vocab_size=VOCAB,
        mask_token_id=MASK,
        mask_replace_prob=split[0],
        random_replace_prob=split[1],
        special_tokens_mask=special,
        generator=torch.Generator().manual_seed(2),
    )
    assert not (hf_labels != -100)[special].any() and not (ours[1] != -100)[special].any()
    n_hf, c_hf = classes(ids, hf_masked, hf_labels)
    n_us, c_us = classes(ids, *ours)
    # two-proportion z-test on the chosen fraction
    total = int((~special).sum())
    p = (n_hf + n_us) / (2 * total)
    z = (n_hf - n_us) / math.sqrt(2 * total * p * (1 - p))
    assert abs(z) < 4.5, z
    # homogeneity of the [MASK]/random/kept split (2 x 3 table, 2 degrees of freedom)
    table = np.stack([c_hf, c_us]).astype(float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    assert math.exp(-stat / 2) > 1e-4, (c_hf, c_us)


def test_mlm_loss_matches_bert_head():
    config = transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37,
    )  # fmt: skip
    model = transformers.BertForMaskedLM(config).double().eval()
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(3))
    labels = torch.where(
        torch.rand(3, 11, generator=torch.Generator().manual_seed(4)) < 0.3, ids, -100
    )
    labels[0, 0] = ids[0, 0]
    out = model(input_ids=ids, labels=labels, output_hidden_states=True)
    head = model.cls.predictions
    hidden = head.transform(out.hidden_states[-1])
    ours = ops.masked_lm_loss(hidden, head.decoder.weight, labels, bias=head.decoder.bias)
    torch.testing.assert_close(ours, out.loss, rtol=1e-10, atol=1e-12)
