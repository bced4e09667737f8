# The two entry points. Both install what they need on a fresh machine (as root).
.PHONY: demo test bench images

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh

# The two OCI images, without a Docker engine: target/images/rds-iam-{webhook,tokenagent}.tar
images:
	bash scripts/images.sh
