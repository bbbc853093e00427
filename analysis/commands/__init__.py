"""One module per `glasscam` subcommand group; each defines ``register(app)``."""
