"""Plan: what a saved plan means on DigitalOcean, the guard, cost, takeover, drift."""
