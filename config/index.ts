export { loadConfig, ConfigError, type LoadConfigOptions } from './load.ts';
export { printConfig } from './print.ts';
export { configSchema, type Config, type ConfigInput, type RouteConfig } from './schema.ts';
