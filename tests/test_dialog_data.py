"""Switchboard dialog data: tokeniser, dialog-level splits, vocabulary from train only, context windows, batches,
errors; the shared 60 dialogs when present."""
import json
import os
from pathlib import Path

import pytest

from trainables.text.dialog_data import load_swda, make_batch, read_dialogs, tokenize

DATA_DIR = Path(os.environ.get("DCSOD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def dialog(topic: str, texts: list[str], speakers: str = "AB", acts: list[str] | None = None) -> dict:
    """One kgCVAE JSON dialog: utterance i by speakers[i % len(speakers)], act acts[i] (default 'statement')."""
    acts = acts or ["statement"] * len(texts)
    meta = {"age": 40, "sex": '"MALE"', "education": "2", "dialect": '"NORTH"'}
    return {"topic": topic, "prompt": "", "A": meta, "B": meta,
            "utts": [[speakers[i % len(speakers)], t, [a, [0.0, 1.0, 0.0, 0.0]]] for i, (t, a) in enumerate(zip(texts,
                                                                                                               acts))]}


def write_dialogs(path: Path, dialogs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogs))
    return path


def synthetic(n: int, length: int = 6) -> list[dict]:
    """``n`` dialogs; dialog d's words carry its number (``w<d>``), so a word tells its dialog apart."""
    return [dialog(f"topic{d % 3}", [f"hello w{d} number {i} yes" if i % 2 else "uh-huh" for i in range(length)],
                   acts=["statement" if i % 2 else "backchannel" for i in range(length)]) for d in range(n)]


def test_tokenize_is_lower_case_word_and_punctuation_runs():
    assert tokenize("I don't KNOW, uh-huh.") == ["i", "don", "'", "t", "know", ",", "uh", "-", "huh", "."]


def test_splits_are_by_dialog_and_seeded(tmp_path):
    write_dialogs(tmp_path / "swda" / "valid.jsonl", synthetic(20))
    data = load_swda(tmp_path, val_frac=0.2, test_frac=0.2, seed=3, min_freq=1)
    parts = [set(s.dialog.tolist()) for s in (data.train, data.val, data.test)]
    assert [len(p) for p in parts] == [12, 4, 4] and set.union(*parts) == set(range(20))
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), "a dialog in two splits"
    for split in (data.train, data.val, data.test):  # every pair lies inside one dialog
        assert all(split.dialog[first] == split.dialog[last] for first, last in split.pairs)
    again = load_swda(tmp_path, val_frac=0.2, test_frac=0.2, seed=3, min_freq=1)
    assert set(again.test.dialog.tolist()) == parts[2]
    assert set(load_swda(tmp_path, val_frac=0.2, test_frac=0.2, seed=4, min_freq=1).test.dialog.tolist()) != parts[2]


def test_vocabulary_and_acts_come_from_the_training_dialogs_only(tmp_path):
    write_dialogs(tmp_path / "swda" / "valid.jsonl", synthetic(20))
    data = load_swda(tmp_path, val_frac=0.2, test_frac=0.2, seed=0, min_freq=1)
    train_ids = set(data.train.dialog.tolist())
    assert data.vocab.itos[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert {f"w{d}" for d in train_ids} <= set(data.vocab.itos)
    for d in set(data.test.dialog.tolist()):
        assert f"w{d}" not in data.vocab.stoi  # seen only in a test dialog
    assert data.vocab.unk in {i for u in data.test.utts for i in u}
    assert data.test.words[1][1] in {f"w{d}" for d in set(data.test.dialog.tolist())}, "references keep raw words"
    rare = load_swda(tmp_path, val_frac=0.2, test_frac=0.2, seed=0, min_freq=4)  # w<d> appears 3 times a dialog
    assert not any(w.startswith("w") for w in rare.vocab.itos) and "hello" in rare.vocab.stoi
    assert data.acts.itos == ["<unk>", "backchannel", "statement"]


def test_context_windows_and_speaker_features(tmp_path):
    texts = [f"u{i}" for i in range(6)]
    write_dialogs(tmp_path / "d" / "train.jsonl", [dialog("t", texts, speakers="AAB")])
    for name in ("valid", "test"):
        write_dialogs(tmp_path / "d" / f"{name}.jsonl", [dialog("t", ["a b", "c d"])])
    data = load_swda(tmp_path / "d", context_window=2, min_freq=1)
    assert data.train.pairs.tolist() == [[0, 1], [0, 2], [1, 3], [2, 4], [3, 5]]  # each pair: at most 2 before
    utts, same = data.train.context(2)  # response u3 by A (speakers A A B A A B); context u1 (A), u2 (B)
    assert [data.vocab.decode(u) for u in utts] == [["u1"], ["u2"]] and same == [1, 0]
    assert len(data.val) == len(data.test) == 1, "train/valid/test.jsonl are used as given"
    batch = make_batch(data.train, [0, 4], data.vocab)
    assert batch.ctx.shape == (2, 2, 1) and batch.ctx_lens.tolist() == [1, 2]
    assert batch.dec_in[0].tolist() == [data.vocab.bos, data.vocab.stoi["u1"]]
    assert batch.target[0].tolist() == [data.vocab.stoi["u1"], data.vocab.eos] and batch.mask.sum() == 4


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing data file: .*valid.jsonl"):
        load_swda(tmp_path)
    bad = write_dialogs(tmp_path / "swda" / "valid.jsonl", synthetic(3))
    bad.write_text(bad.read_text() + '{"utts": [["A", "hi"]]}\n')
    with pytest.raises(ValueError, match=r"valid.jsonl:4: not a kgCVAE dialog line") as err:
        read_dialogs(bad, 40)
    assert "\n" not in str(err.value)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"valid.jsonl:1: not a kgCVAE dialog line \(JSONDecodeError"):
        load_swda(tmp_path)
    write_dialogs(bad, synthetic(3))
    with pytest.raises(ValueError, match="empty split"):
        load_swda(tmp_path, val_frac=0.1, test_frac=0.1)


@pytest.mark.skipif(not (DATA_DIR / "swda" / "valid.jsonl").is_file(), reason="shared swda data not present")
def test_the_shared_60_dialogs_split_48_6_6():
    data = load_swda(DATA_DIR, max_utt_len=30)
    dialogs = [set(s.dialog.tolist()) for s in (data.train, data.val, data.test)]
    assert [len(d) for d in dialogs] == [48, 6, 6] and not (dialogs[0] & (dialogs[1] | dialogs[2]))
    assert sum(len(s.utts) for s in (data.train, data.val, data.test)) == 5225
    assert max(len(u) for u in data.train.utts) == 30
