/** This package's name and version, written into every report (a test keeps it equal to package.json). */
export const TOOL_NAME = '@olocus/hsm-compliance';
export const TOOL_VERSION = '0.1.0';
