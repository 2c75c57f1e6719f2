export { announcedPosition, changeChannel, encodeChange, decodeChange } from './change-feed';
