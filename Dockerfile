# The image-reflector container image. (Not built by the tests: these machines have no
# container engine.) Build: docker build -t image-reflector:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin image-reflector

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/image-reflector /usr/local/bin/image-reflector
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/image-reflector"]
CMD ["serve"]
