#!/usr/bin/env python3
"""Build a man page from docs/NAME.in: @VERSION@ becomes the version, @CONFIG_KEYS@ every
key of the sample configuration (placeholder; the full generator replaces this)."""
import sys

src, conf, version = sys.argv[1:4]
text = open(src).read().replace("@VERSION@", open(version).read().strip())
sys.stdout.write(text.replace("@CONFIG_KEYS@", ""))
