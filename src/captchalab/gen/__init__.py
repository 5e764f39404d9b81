"""Seeded captcha rendering into sharded TFRecord datasets."""
