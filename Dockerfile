# Courrier gateway image. Node 24 LTS runs the TypeScript sources directly (type stripping):
# no build step, the image holds exactly what the repository holds.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# npm install keeps to the lockfile (see .ci/with-node24.sh for why not npm ci).
RUN npm install --omit=dev --no-save --no-audit --no-fund

FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    COURRIER_DATADIR=/data \
    COURRIER_SMTP__SUBMISSION__HOST=0.0.0.0 \
    COURRIER_SMTP__RELAY__HOST=0.0.0.0 \
    COURRIER_REDIS__URL=redis://redis:6379
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY config ./config
COPY crypto ./crypto
COPY directory ./directory
COPY queue ./queue
COPY gateway ./gateway
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# 2587: submission (STARTTLS, AUTH); 2525: relay from peer gateways (mutual TLS).
EXPOSE 2587 2525
# The gateway answers SMTP when it is healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD node -e "const s=require('net').connect(2587,'127.0.0.1');s.once('data',d=>process.exit(/^220 /.test(d)?0:1));s.once('error',()=>process.exit(1))"
STOPSIGNAL SIGTERM
# --max-semi-space-size=16: as the shebang of gateway/cli.ts (directory import memory, docs/directory.md);
# through NODE_OPTIONS so that `docker compose exec courrier node gateway/cli.ts ...` gets it too.
ENV NODE_OPTIONS=--max-semi-space-size=16
ENTRYPOINT ["node", "gateway/cli.ts"]
CMD ["serve"]
