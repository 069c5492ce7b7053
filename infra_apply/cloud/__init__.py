"""Cloud: the DigitalOcean API, its token, the run's account catalogue, the state bucket."""
