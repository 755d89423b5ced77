# ASM service image. Build: docker build -t asm . · Run: docker run -e ASM_API_KEYS=... -p 8787:8787 asm
# Agent CLIs (claude, codex, …) are not included: install them in a derived image and point ASM_<NAME>_BIN at them.
FROM node:20-bookworm-slim AS build
# What node-gyp needs to build native/spawn.c, the service's posix_spawn (README "How child processes start").
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# stubs/: what package.json's overrides put in place of the SDKs' bundled CLI binaries. native/ and
# its build script: built by `npm ci` (package.json "install").
COPY package.json package-lock.json ./
COPY stubs ./stubs
COPY native/spawn.c native/binding.gyp ./native/
COPY scripts/build-native.mjs ./scripts/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
# The sandbox around every agent CLI (README "Sandbox"): bubblewrap, and setpriv (util-linux) to drop
# to ASM_SANDBOX_USER. bwrap needs user namespaces, which Docker's default seccomp profile refuses:
# run with --security-opt seccomp=unconfined (or a profile allowing unshare/clone of namespaces), or
# say ASM_SANDBOX=none explicitly and rely on the container alone.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap util-linux && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    ASM_HOST=0.0.0.0 \
    ASM_PORT=8787 \
    ASM_WORKSPACE_ROOT=/workspace
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/stubs ./stubs
COPY --from=build /app/dist ./dist
COPY --from=build /app/native/build/Release/asm_spawn.node ./native/build/Release/
COPY package.json ./
RUN mkdir -p /workspace && chown node:node /workspace
USER node
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:8787/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Binding 0.0.0.0 requires ASM_API_KEYS: the server refuses to start without them.
CMD ["node", "dist/cli/main.js", "serve"]
