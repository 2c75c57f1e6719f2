export { announcedPosition, announcedTraceparent, changeChannel, encodeChange, decodeChange } from './change-feed';
