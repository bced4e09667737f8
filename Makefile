# The two entry points. Both install what they need on a fresh machine (as root).
.PHONY: demo test bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh
