# One-line aliases for the package.json scripts (they are the source of truth).
# `make up` on a fresh clone installs, builds and starts everything; only Node is needed.

.PHONY: install build up deps command query migrate test soak fuzz lint generate format bench bench-smoke clean

# npm ci when node_modules is missing or older than package-lock.json (npm writes the marker).
# Should npm ci reject the lock file (one written where @bufbuild/buf's binaries for other
# platforms were missing, as it once was), npm install installs the same locked versions.
node_modules/.package-lock.json: package-lock.json
	npm ci || { echo "make: npm ci rejected package-lock.json; installing the locked versions with npm install" >&2; npm install; }
	@touch $@

install: node_modules/.package-lock.json

build: install
	npm run build

up: build
	npm run up

deps: build
	npm run deps

command: build
	npm run start:command

query: build
	npm run start:query

migrate: build
	npm run migrate

test: build
	npm test

soak: build
	npm run soak

fuzz: build
	npm run fuzz

lint: build
	npm run lint

generate: install
	npm run generate

format: install
	npm run format

bench: build
	npm run bench

bench-smoke: build
	npm run bench:smoke

clean:
	npm run clean
