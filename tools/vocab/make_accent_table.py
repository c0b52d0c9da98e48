#!/usr/bin/env python3
"""Write the accent-stripping table used by BertTextTokenizer (src/FashionViL/Data/Text/AccentStripper.cs).

HuggingFace's BertTokenizer (uncased) strips accents as `NFD(text)` minus every character of category Mn.
.NET's string.Normalize needs ICU, which this project's executables run without (InvariantGlobalization), so the
canonical decompositions are shipped as data: for every code point whose NFD differs from itself (Hangul syllables
excepted: they decompose by formula, done in code), one line
    <code point hex> [<hex> ...]
giving NFD(c) with its Mn characters removed (possibly nothing). Data: Python's unicodedata (the Unicode Character
Database; version printed in the file header).

Usage: /usr/bin/python3 tools/vocab/make_accent_table.py src/FashionViL/Data/Text/vocab/nfd-strip-marks.txt
"""
import os
import sys
import unicodedata


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dst = sys.argv[1]
    lines = [f"# NFD minus Mn, Unicode {unicodedata.unidata_version} (Python unicodedata); see tools/vocab/make_accent_table.py"]
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000 or 0xAC00 <= cp < 0xAC00 + 11172:
            continue
        c = chr(cp)
        d = unicodedata.normalize("NFD", c)
        if d == c:
            continue
        kept = [f"{ord(x):04X}" for x in d if unicodedata.category(x) != "Mn"]
        lines.append(" ".join([f"{cp:04X}"] + kept))
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, dst)
    print(f"{dst}: {len(lines) - 1} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
