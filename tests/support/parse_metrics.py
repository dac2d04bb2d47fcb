#!/usr/bin/python3
"""Parses a Prometheus text exposition (the file named by argv[1]) with the
Prometheus client library's own parser (Debian python3-prometheus-client)
and prints one line per sample: `name<TAB>type<TAB>labels<TAB>value`, labels
as k=v joined by ','. Exits 1 (message on stderr) if the text does not
parse."""

import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                print(f"{s.name}\t{family.type}\t{labels}\t{s.value!r}")
    except Exception as e:  # the parser raises ValueError and others
        print(f"parse error: {e}", file=sys.stderr)
        sys.exit(1)


main()
