export * from './evaluation-archive';
