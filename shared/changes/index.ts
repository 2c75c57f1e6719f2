export {
  announcedLogsAppended,
  announcedPosition,
  announcedTraceparent,
  changeChannel,
  changeChannels,
  encodeChange,
  decodeChange,
} from './change-feed';
