"""Prometheus text: scraped with urllib and parsed strictly (a line that is not a sample is an
error, not skipped)."""

import re
import urllib.request

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


def parse_samples(text):
    """Prometheus text -> ([(name, {label: value}, float)], {family: type})."""
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            types[family] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            raise AssertionError(f"unparsable metrics line: {line!r}")
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL_RE.findall(labels or "")), float(value)))
    return samples, types


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    return {(name, frozenset(labels.items())): value
            for name, labels, value in parse_samples(text)[0]}


def metric(samples, name, **labels):
    """The value of the sample (of parse_metrics) with exactly these labels; AssertionError
    if absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        similar = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        shown = similar[:10] + ([f"... {len(similar) - 10} more"] if len(similar) > 10 else [])
        raise AssertionError(f"no sample {name}{labels}; samples of {name}: {shown}")
    return samples[key]


def metric_sum(samples, name, **labels):
    """The sum of the samples (of parse_samples) of `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))
