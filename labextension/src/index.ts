import { sidebarPlugin } from './plugin';

export default [sidebarPlugin];
