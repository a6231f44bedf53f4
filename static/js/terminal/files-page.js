// The standalone files page (/machines/<agent_id>/files): the files drawer as the whole page,
// for viewers (who cannot open a terminal) and anyone who wants only the files.
import { FilesDrawer } from "./files.js";
import { initialTheme } from "./themes.js";

const root = document.getElementById("files-app");
if (root) root.setAttribute("data-term-theme", initialTheme());
if (root) window.portalFiles = new FilesDrawer(null, root, { page: true });
