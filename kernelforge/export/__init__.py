"""How models run in browsers: manifest, bundle and the static JS runtime (built in a later release)."""
