"""The TLA+ face of vfiospec: modules under `tla/`, one TLC configuration and
`manifest.json` per model under `models/`, the TLC runner (`tlc.py`), trace
generation (`generate.py`, spec -> implementation) and trace validation
(`validate.py`, implementation -> spec). See spec/README.md."""
