"""Optional integrations with training frameworks; each needs its extra, e.g.
`pip install -e ".[lightning]"` in the tradi clone (tradi is not on PyPI; or `pip install
lightning`) for `tradi.integrations.lightning.TRADICallback`."""
