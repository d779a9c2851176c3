#!/usr/bin/env python3
"""Checks the chart's rendered NOTES (read from stdin, as `helm install --dry-run` prints them):
every shell heredoc a user would paste (`<<'WORD'` or `<<WORD`) must end with a line that is
exactly WORD, or the pasted block never ends. Exits 1 naming the heredoc that does not end."""
import re
import sys

lines = sys.stdin.read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith("NOTES:")), None)
if start is None:
    sys.exit("check-notes: no NOTES in the output")
notes = lines[start + 1:]
bad = []
for i, line in enumerate(notes):
    m = re.search(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", line)
    if not m:
        continue
    word, strip_tabs = m.group(2), line[m.start():].startswith("<<-")
    ends = [l.lstrip("\t") if strip_tabs else l for l in notes[i + 1:]]
    if word not in ends:
        bad.append(f"line {i + 1}: {line.strip()!r} has no line that is exactly {word!r}")
if bad:
    sys.exit("check-notes: heredocs in NOTES.txt that never end when pasted:\n  " + "\n  ".join(bad))
print(f"check-notes: ok ({len(notes)} lines)")
