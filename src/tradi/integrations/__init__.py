"""Optional integrations with training frameworks; each needs its extra, e.g.
`pip install "tradi[lightning]"` for `tradi.integrations.lightning.TRADICallback`."""
