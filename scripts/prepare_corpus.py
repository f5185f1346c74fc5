#!/usr/bin/env python3
"""scripts/prepare_corpus.py — the byte-level training corpus for the project's own small Qwen2
model (issue: a real model), assembled from long-form English text in Debian packages:

  bible-kjv (+ bible-kjv-text)  the King James Bible, one document per book (`bible -f`)
  jargon-text                   the Jargon File, one document per ~64 KB section
  dict-gcide                    the GCIDE dictionary, one document per ~256 KB section
  debian-reference-en           the Debian Reference, one document per chapter

Every document goes whole to train or to held-out (every 10th document of each source, by a
fixed rule), so no passage is split across the two. Writes to OUT (default data/corpus):
  train.bin, heldout.bin      raw UTF-8 bytes, documents separated by a blank line
  documents.tsv               source, document id, split, bytes, sha256
  manifest.json               package versions, sizes, sha256 of the outputs, and the byte
                              unigram and bigram baselines in bits per byte on held-out
Missing packages are installed with apt-get when run as root; otherwise the script names them.
Uses only Debian's python3 standard library. `--self-test` checks the split and the baseline
arithmetic on synthetic documents (run by ctest as corpus_selftest).

Also writes 8 held-out passages of 4160 bytes for the studies (--passages, default
experiments/passages: heldout-<i>.txt + passages.json naming document and offset).

Usage: /usr/bin/python3 scripts/prepare_corpus.py [--out DIR] [--passages DIR]
"""
import argparse
import collections
import gzip
import hashlib
import json
import math
import os
import re
import subprocess
import sys

PACKAGES = ["bible-kjv", "bible-kjv-text", "jargon-text", "dict-gcide", "debian-reference-en"]
HELDOUT_EVERY, HELDOUT_INDEX = 10, 3  # document i of a source is held out when i % 10 == 3


def package_versions(names):
    out = {}
    for n in names:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", n], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith("install ok installed"):
            out[n] = r.stdout.split("\t")[1]
    return out


def ensure_packages():
    have = package_versions(PACKAGES)
    missing = [p for p in PACKAGES if p not in have]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"prepare_corpus: missing Debian packages {' '.join(missing)}; "
                     f"run as root or: apt-get install {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
        have = package_versions(PACKAGES)
    return have


def bible_documents():
    text = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, check=True).stdout
    books = collections.OrderedDict()
    for line in text.decode("utf-8", "replace").splitlines():
        m = re.match(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        books.setdefault(m.group(1), []).append(m.group(4))
    if len(books) != 66:
        raise SystemExit(f"prepare_corpus: expected 66 books from `bible -f`, got {len(books)}")
    return [(f"bible:{b}", "\n".join(v) + "\n") for b, v in books.items()]


def jargon_documents():
    """The Jargon File (UTF-8 text) in consecutive ~64 KB sections cut at blank lines."""
    with gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    return [(f"jargon:{i:02d}", s) for i, s in enumerate(sections(text, 64 * 1024))]


def sections(text, size):
    """Consecutive pieces of about `size` characters, cut at blank lines."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.find("\n\n", end)
            end = len(text) if cut < 0 else cut + 2
        out.append(text[start:end])
        start = end
    return out


def gcide_documents():
    with gzip.open("/usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    return [(f"gcide:{i:04d}", s) for i, s in enumerate(sections(text, 256 * 1024))]


def debian_reference_documents():
    with gzip.open("/usr/share/debian-reference/debian-reference.en.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    parts = re.split(r"\n(?=Chapter\s\d+\.\s)", text)  # "Chapter\xa0N.\xa0Title"
    return [(f"debian-reference:{i:02d}", p) for i, p in enumerate(parts) if p.strip()]


def check_sources(docs):
    """Every source must split into enough documents to have one held out."""
    count = collections.Counter(d.split(":")[0] for d, _ in docs)
    for source, n in count.items():
        if n <= HELDOUT_INDEX:
            raise SystemExit(f"prepare_corpus: source {source} gave {n} document(s); its splitting failed "
                             f"(no document of it would be held out)")


def write_passages(held, out_dir, n=8, length=4160):
    """n held-out passages of `length` bytes for the studies, one per document of `held` ((id, UTF-8
    bytes)), taking the sources in turn in the order they first appear (bible, jargon, gcide,
    debian-reference), each from the middle of its document and starting at a line start.
    Returns [(file, document id, byte offset within the document)]."""
    by_source = collections.OrderedDict()
    for doc_id, data in held:
        docs = by_source.setdefault(doc_id.split(":")[0], [])
        if len(data) >= 2 * length:
            docs.append((doc_id, data))
    order = []
    while any(by_source.values()) and len(order) < n:
        for docs in by_source.values():
            if docs and len(order) < n:
                order.append(docs.pop(0))
    if len(order) < n:
        raise SystemExit(f"prepare_corpus: only {len(order)} held-out documents are long enough for passages")
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for i, (doc_id, data) in enumerate(order):
        start = data.index(b"\n", len(data) // 2 - length // 2) + 1
        name = f"heldout-{i}.txt"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data[start:start + length])
        out.append((name, doc_id, start))
    return out


def split_documents(docs):
    """(train, heldout) lists of (id, text): every HELDOUT_EVERY-th document of each source."""
    train, held = [], []
    index = collections.Counter()
    for doc_id, text in docs:
        source = doc_id.split(":")[0]
        (held if index[source] % HELDOUT_EVERY == HELDOUT_INDEX else train).append((doc_id, text))
        index[source] += 1
    return train, held


def baselines(train, held):
    """Bits per byte of held-out under byte unigram (add-one) and bigram (interpolated with the
    unigram, weight c(a) / (c(a) + 256)) models counted on train."""
    uni = [1] * 256
    big = collections.defaultdict(lambda: [0] * 256)
    ctx = [0] * 256
    for data in train:
        for i, b in enumerate(data):
            uni[b] += 1
            if i:
                big[data[i - 1]][b] += 1
                ctx[data[i - 1]] += 1
    total = sum(uni)
    p_uni = [u / total for u in uni]
    bits_uni = bits_big = 0.0
    n = 0
    for data in held:
        for i, b in enumerate(data):
            bits_uni -= math.log2(p_uni[b])
            if i:
                a = data[i - 1]
                lam = ctx[a] / (ctx[a] + 256.0)
                p = lam * (big[a][b] / ctx[a] if ctx[a] else 0.0) + (1 - lam) * p_uni[b]
            else:
                p = p_uni[b]
            bits_big -= math.log2(p)
            n += 1
    return {"unigram_bits_per_byte": bits_uni / n, "bigram_bits_per_byte": bits_big / n, "heldout_bytes": n}


def self_test():
    docs = [(f"a:{i}", f"doc {i} " * 5) for i in range(25)] + [(f"b:{i}", "xyz" * i + "\n") for i in range(1, 13)]
    train, held = split_documents(docs)
    assert [d for d, _ in held] == ["a:3", "a:13", "a:23", "b:4"], held
    assert len(train) + len(held) == len(docs) and not set(dict(train)) & set(dict(held))
    # A source of one repeated byte pair: the bigram model predicts the pattern, the unigram does not.
    t = [b"ab" * 2000]
    h = [b"ab" * 100]
    r = baselines(t, h)
    assert r["heldout_bytes"] == 200
    # unigram: p(a) = p(b) = 2001 / 4256 (add-one over 256 bytes) -> about 1.09 bits per byte
    assert abs(r["unigram_bits_per_byte"] - math.log2(4256 / 2001)) < 1e-12, r
    assert r["bigram_bits_per_byte"] < 0.2 * r["unigram_bits_per_byte"], r
    print("prepare_corpus self-test: 2 passed, 0 failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/corpus")
    ap.add_argument("--passages", default="experiments/passages",
                    help="folder for the held-out study passages (heldout-<i>.txt)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    versions = ensure_packages()
    docs = bible_documents() + jargon_documents() + gcide_documents() + debian_reference_documents()
    check_sources(docs)
    train, held = split_documents(docs)
    os.makedirs(args.out, exist_ok=True)
    rows, outputs, encoded = [], {}, {}
    for name, part in (("train", train), ("heldout", held)):
        blobs = encoded[name] = [t.encode("utf-8") for _, t in part]  # each document encoded once
        data = b"\n\n".join(blobs)
        path = os.path.join(args.out, f"{name}.bin")
        with open(path, "wb") as f:
            f.write(data)
        outputs[name] = {"file": f"{name}.bin", "bytes": len(data), "documents": len(part),
                         "sha256": hashlib.sha256(data).hexdigest()}
        for (doc_id, _), blob in zip(part, blobs):
            rows.append(f"{doc_id.split(':')[0]}\t{doc_id}\t{name}\t{len(blob)}\t{hashlib.sha256(blob).hexdigest()}")
    with open(os.path.join(args.out, "documents.tsv"), "w") as f:
        f.write("source\tdocument\tsplit\tbytes\tsha256\n" + "\n".join(rows) + "\n")
    base = baselines(encoded["train"], encoded["heldout"])
    passages = write_passages([(d, b) for (d, _), b in zip(held, encoded["heldout"])], args.passages)
    manifest = {"packages": versions,
                "heldout_rule": f"document index % {HELDOUT_EVERY} == {HELDOUT_INDEX} within each source",
                "outputs": outputs, "baselines": base,
                "passages": [{"file": f, "document": d, "byte_offset": o} for f, d, o in passages]}
    with open(os.path.join(args.passages, "passages.json"), "w") as f:
        json.dump({"from": "held-out documents of scripts/prepare_corpus.py (byte_offset: within the document)",
                   "packages": versions,
                   "passages": manifest["passages"]}, f, indent=1)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
