# One image for both services; docker-compose.yml picks the entry point.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run build && npm prune --omit=dev

FROM node:20-slim
WORKDIR /app
ENV NODE_ENV=production ENVIRONMENT=production
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Server reflection is fed from the descriptor set `npm run generate` commits next to the code.
COPY --from=build /app/shared/generated/crucible.binpb ./shared/generated/crucible.binpb
USER node
EXPOSE 50051 50052 9464 9465
CMD ["node", "--enable-source-maps", "dist/services/command/main.js"]
