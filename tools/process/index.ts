export * from './child';
export * from './restart';
