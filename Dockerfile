# agentvm-server in a container: the glibc-2.17 release binary, the shared libraries it loads,
# and nothing else (no shell, no package manager). Built from the files scripts/dist.sh puts in
# dist/image, without a registry:
#   bash scripts/dist.sh        # builds dist/ and, with Docker running, this image
#   docker build -t agentvm-server .
#   docker run -d -p 8080:8080 -v agentvm-data:/data agentvm-server
# It runs as the unprivileged user agentvm (uid 10001) and keeps its data in the volume /data.
# On 0.0.0.0 authentication is on: the first start prints a token for all containers once
# (`docker logs`); the probes /health, /livez and /readyz answer without one.
FROM scratch
COPY dist/image/rootfs/ /
COPY --chown=10001:10001 dist/image/data/ /data/
ENV HOME=/data AGENTVM_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/agentvm-server"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--bootstrap-token"]
