export { changeChannel, encodeChange, decodeChange } from './change-feed';
