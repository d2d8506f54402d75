"""Labels bottle-tui puts on its containers, networks and images; discovery trusts only these."""

MANAGED = "dev.bottle-tui.managed"
SLUG = "dev.bottle-tui.slug"
AGENT = "dev.bottle-tui.agent"
BOTTLE = "dev.bottle-tui.bottle"
BACKEND = "dev.bottle-tui.backend"
STARTED_AT = "dev.bottle-tui.started-at"
HOME = "dev.bottle-tui.home"
# A warm pool member (backends/docker/pool.py): the bottle it was made for. Its labels stay those
# of its making; a claim renames its containers, and the name then says the slug (engine.py).
POOL = "dev.bottle-tui.pool"
IMAGE_HASH = "dev.bottle-tui.input-hash"
# Images carry IMAGE, not MANAGED: containers inherit image labels, and a container someone runs
# from our image by hand is not a bottle's.
IMAGE = "dev.bottle-tui.image"
# A snapshot's image (backends/docker/snapshot.py): its name, and the slug of the bottle it was taken of.
SNAPSHOT = "dev.bottle-tui.snapshot"
SNAPSHOT_OF = "dev.bottle-tui.snapshot-of"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
