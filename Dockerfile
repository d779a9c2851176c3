# The operator image: one static-ish binary, `sluice controller` (and later `sluice dispatcher`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Everything Cargo.toml declares a target in, or cargo refuses the manifest
# (hack/check-dockerfile.sh checks this in `make test`).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY hack/testbed/podrunner ./hack/testbed/podrunner
RUN cargo build --release --locked --bin sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]
