"""The inference market: runners serve models for vouchers over payment channels (docs/market.md)."""
